//! Emulated regions on one machine: a network namespace per region, joined to this
//! process's namespace by a veth pair, and a wide-area delay between them that the
//! kernel cannot add here (it has no `netem`) — added by small user-space proxies.
//!
//! Every dabba process of a region runs inside its namespace, listening on the region's
//! address (`10.P.i.2`). What it advertises to the others (its API, its ingress) is a
//! proxy on the hub address `10.P.0.1`, reachable from every region: the proxy tells the
//! caller's region by its source address and delays both directions by the one-way
//! latency between the two regions (a fixed delay, and optionally jitter on top). Tests and benchmarks reach a process directly at its
//! region address, as a client inside that region would.
//!
//! A region is partitioned by taking its link down (its processes stay alive), and
//! healed by bringing it up. Everything is created under names carrying the block's
//! number `P`, only in the `10.P.0.0/16` block, and removed when the [`Wan`] is dropped.
//! A block is claimed by an exclusive lock on a file named for it, held as long as the
//! [`Wan`] lives: two emulations (two tests in one process, or a test and a benchmark)
//! never share a block, and the lock of a run that crashed is released by the kernel,
//! so the next owner of the block clears what that run left behind.
//!
//! It needs root (CI runs as root on this machine kind): [`Wan::available`] says why
//! not, for a test to skip with that message; as root, a failure is a failure.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The wide-area link between two regions, one way: every chunk of bytes is delivered
/// `delay` plus a uniformly random share of `jitter` after it was sent, never before
/// the chunk sent ahead of it (a TCP stream stays in order, so jitter shows as latency
/// variation, not reordering).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub delay: Duration,
    pub jitter: Duration,
}

impl From<Duration> for Latency {
    /// A fixed delay, no jitter.
    fn from(delay: Duration) -> Self {
        Latency {
            delay,
            jitter: Duration::ZERO,
        }
    }
}

/// The emulated regions.
pub struct Wan {
    /// The second octet of every address: `10.P.*.*`.
    octet: u8,
    /// A tag in every name created (the block's number).
    tag: String,
    /// The block's lock, held while this emulation lives.
    _claim: std::fs::File,
    regions: Vec<String>,
    /// What the proxies need (shared with their tasks, which must not keep the `Wan`
    /// alive: dropping it removes everything).
    links: Arc<Links>,
    /// Ports handed out inside the regions (each namespace has its own).
    next_port: AtomicU16,
    proxies: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Wan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wan")
            .field("regions", &self.regions)
            .field("octet", &self.octet)
            .finish_non_exhaustive()
    }
}

/// Claims a free block `10.P.0.0/16` (`P` in 100..=199, starting from one derived from
/// this process's id): the lock on `dabba-wan-P.lock` in the temporary directory,
/// taken without waiting.
fn claim_block() -> anyhow::Result<(u8, std::fs::File)> {
    let start = std::process::id() % 100;
    for k in 0..100 {
        let octet = 100 + ((start + k) % 100) as u8;
        let path = std::env::temp_dir().join(format!("dabba-wan-{octet}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => return Ok((octet, file)),
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
    bail!("every address block 10.100.0.0 to 10.199.0.0 is in use by another emulation")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Wan {
    /// Whether regions can be emulated here: they need root (for network namespaces).
    /// As root, the emulation is expected to work — [`Wan::create`] fails loudly if it
    /// does not, so a test never passes by skipping on a machine that could run it.
    pub fn available() -> Result<(), String> {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("root (cannot read /proc/self/status: {e})"))?;
        // "Uid:\treal\teffective\tsaved\tfs": the effective id decides.
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .map(str::to_owned);
        match effective.as_deref() {
            Some("0") => Ok(()),
            _ => Err("root, for network namespaces: run as root".into()),
        }
    }

    /// Creates one namespace per region, with `latency(a, b)` one way between regions
    /// `a` and `b` (it should be symmetric): a [`Duration`], or a [`Latency`] with jitter.
    pub fn create<L: Into<Latency>>(
        regions: &[&str],
        latency: impl Fn(&str, &str) -> L,
    ) -> anyhow::Result<Arc<Wan>> {
        anyhow::ensure!(regions.len() < 200, "at most 199 regions");
        let (octet, claim) = claim_block()?;
        let wan = Wan {
            octet,
            tag: format!("{octet}"),
            _claim: claim,
            regions: regions.iter().map(|r| r.to_string()).collect(),
            links: Arc::new(Links {
                octet,
                regions: regions.len(),
                delays: regions
                    .iter()
                    .enumerate()
                    .flat_map(|(i, a)| {
                        regions
                            .iter()
                            .enumerate()
                            .map(move |(j, b)| ((i, j), (a, b)))
                    })
                    .map(|((i, j), (a, b))| {
                        let l = if i == j {
                            Latency::default()
                        } else {
                            latency(a, b).into()
                        };
                        ((i, j), l)
                    })
                    .collect(),
            }),
            next_port: AtomicU16::new(20_000),
            proxies: Mutex::new(Vec::new()),
        };
        // Clear what a crashed earlier owner of this block may have left.
        wan.remove();
        let hub = format!("{}/32", wan.hub());
        ip(&["addr", "add", &hub, "dev", "lo"])?;
        // With a region's link down, its addresses must be unreachable from here, not
        // sent on along the default route (where a machine's egress proxy may answer).
        ip(&[
            "route",
            "add",
            "unreachable",
            &wan.block(),
            "metric",
            "4000",
        ])?;
        for i in 0..regions.len() {
            let ns = wan.ns(i);
            let (outside, inside) = wan.veth(i);
            let gateway = format!("{}/24", wan.gateway(i));
            let own = format!("{}/24", wan.address(i));
            let hub_route = format!("{}/32", wan.hub());
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["addr", "add", &gateway, "dev", &outside])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &own, "dev", &inside,
            ])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inside, "up"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            ip(&[
                "netns",
                "exec",
                &ns,
                "ip",
                "route",
                "add",
                &hub_route,
                "via",
                &wan.gateway(i).to_string(),
            ])?;
        }
        Ok(Arc::new(wan))
    }

    fn index(&self, region: &str) -> usize {
        self.regions
            .iter()
            .position(|r| r == region)
            .unwrap_or_else(|| panic!("no emulated region {region}"))
    }

    fn ns(&self, i: usize) -> String {
        format!("dbw{}r{i}", self.tag)
    }

    /// The two ends of region `i`'s link: outside (here), inside (in the region).
    fn veth(&self, i: usize) -> (String, String) {
        (
            format!("dbw{}r{i}o", self.tag),
            format!("dbw{}r{i}i", self.tag),
        )
    }

    /// The whole block: `10.P.0.0/16`.
    fn block(&self) -> String {
        format!("10.{}.0.0/16", self.octet)
    }

    fn hub(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 0, 1)
    }

    fn gateway(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, i as u8 + 1, 1)
    }

    fn address(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, i as u8 + 1, 2)
    }

    /// A new address for a process to listen on in `region`.
    pub fn listen_addr(&self, region: &str) -> SocketAddr {
        let port = self.next_port.fetch_add(1, Ordering::Relaxed);
        SocketAddr::new(self.address(self.index(region)).into(), port)
    }

    /// `program args...` to run inside `region`.
    pub fn command(
        &self,
        region: &str,
        program: &std::path::Path,
        args: &[String],
    ) -> (PathBuf, Vec<String>) {
        let mut all = vec![
            "netns".to_string(),
            "exec".into(),
            self.ns(self.index(region)),
            program.display().to_string(),
        ];
        all.extend(args.iter().cloned());
        (PathBuf::from("ip"), all)
    }

    /// A command that runs `program args...` inside `region` (a client there).
    pub fn client(&self, region: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(self.index(region)), program])
            .args(args);
        cmd
    }

    /// Makes `target` (a process listening in `region`) reachable from every region at
    /// a hub address, behind the wide-area delay; returns that address.
    pub async fn expose(
        self: &Arc<Self>,
        region: &str,
        target: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let to = self.index(region);
        let listener = TcpListener::bind(SocketAddr::new(self.hub().into(), 0)).await?;
        let addr = listener.local_addr()?;
        let links = self.links.clone();
        let task = tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                // While the target is down, nothing listens: callers are refused, as
                // they would be by a dead process's machine, and fail over at once.
                let l = match listener.take() {
                    Some(l) => l,
                    None => {
                        while TcpStream::connect(target).await.is_err() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        match TcpListener::bind(addr).await {
                            Ok(l) => l,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        }
                    }
                };
                loop {
                    let Ok((client, peer)) = l.accept().await else {
                        break;
                    };
                    let Ok(server) = TcpStream::connect(target).await else {
                        // Close on this caller and stop listening until the target is back.
                        drop(client);
                        break;
                    };
                    let latency = links
                        .region_of(&peer)
                        .map_or(Latency::default(), |from| links.delays[&(from, to)]);
                    tokio::spawn(async move {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pump(cr, sw, latency), pump(sr, cw, latency));
                    });
                }
            }
        });
        self.proxies.lock().expect("proxies lock").push(task);
        Ok(addr)
    }

    /// Cuts `region` off from every other (its processes keep running).
    pub fn cut(&self, region: &str) -> anyhow::Result<()> {
        ip(&["link", "set", &self.veth(self.index(region)).0, "down"])
    }

    /// Joins `region` again.
    pub fn heal(&self, region: &str) -> anyhow::Result<()> {
        ip(&["link", "set", &self.veth(self.index(region)).0, "up"])
    }

    fn remove(&self) {
        for i in 0..self.regions.len() {
            // Deleting a namespace deletes the veth pair with it.
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.veth(i).0]);
        }
        let _ = ip(&["addr", "del", &format!("{}/32", self.hub()), "dev", "lo"]);
        let _ = ip(&["route", "del", "unreachable", &self.block()]);
    }
}

/// The delays between regions, and how to tell a caller's region.
struct Links {
    octet: u8,
    regions: usize,
    /// One-way latency between regions, by index pair (both orders).
    delays: HashMap<(usize, usize), Latency>,
}

impl Links {
    /// The region an address is in (by the third octet), if any.
    fn region_of(&self, addr: &SocketAddr) -> Option<usize> {
        match addr.ip() {
            std::net::IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                (a == 10 && b == self.octet && d == 2 && c >= 1)
                    .then_some(c as usize - 1)
                    .filter(|i| *i < self.regions)
            }
            _ => None,
        }
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        for p in self.proxies.lock().expect("proxies lock").drain(..) {
            p.abort();
        }
        self.remove();
    }
}

/// Copies `from` to `to`, each chunk delivered `latency` after it was read (in order),
/// and closes `to`'s write side when `from` ends.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency: Latency,
) {
    if latency == Latency::default() {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = tokio::time::Instant::now();
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let at = (tokio::time::Instant::now() + latency.sample()).max(last);
            last = at;
            if tx.send((at, buf[..n].to_vec())).is_err() || n == 0 {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if bytes.is_empty() || to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl Latency {
    /// One chunk's delay: `delay` and a uniform share of `jitter`.
    fn sample(&self) -> Duration {
        if self.jitter.is_zero() {
            return self.delay;
        }
        self.delay + self.jitter.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::claim_block;

    #[test]
    fn two_emulations_never_share_a_block_and_a_released_block_is_free_again() {
        let (a, lock_a) = claim_block().unwrap();
        let (b, lock_b) = claim_block().unwrap();
        assert_ne!(a, b, "both claimed 10.{a}.0.0/16");
        assert!((100..=199).contains(&a) && (100..=199).contains(&b));
        drop(lock_a);
        drop(lock_b);
        // Both free again: the first claim from this process's starting point finds one.
        let (c, _lock_c) = claim_block().unwrap();
        assert!(
            c == a || c == b,
            "10.{c} claimed, expected the released {a} or {b}"
        );
    }
}
