//! The container comparison's throughput and latency rows: the same load (payment: a new
//! payment per request; search: one query) at each concurrency against `dabba serve`,
//! the container, and `wasmtime serve` on the same component, one after another.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use dabba_testkit::free_port;

use super::{PAYMENT_BODY, SEARCH_PATH, Sizes, Throughput, Workload, until_answers};
use crate::docker;
use crate::load::{self, Load, LoadResult};
use crate::stats::ratio;
use crate::targets::{self, Server};

/// The load for `workload` against `addr`.
fn load_for(workload: &str, addr: SocketAddr, concurrency: usize, duration: Duration) -> Load {
    let (method, path, headers, unique, body) = if workload == "payment" {
        (
            http::Method::POST,
            "/payments",
            vec![("content-type".to_string(), "application/json".to_string())],
            Some("idempotency-key".to_string()),
            bytes::Bytes::from_static(PAYMENT_BODY.as_bytes()),
        )
    } else {
        (
            http::Method::GET,
            SEARCH_PATH,
            Vec::new(),
            None,
            bytes::Bytes::new(),
        )
    };
    Load {
        addr,
        method,
        path: path.into(),
        headers,
        unique_header: unique,
        body,
        concurrency,
        warmup: Duration::from_secs(1),
        duration,
        max_requests: u64::MAX,
    }
}

async fn measure_load(what: &str, load: &Load) -> anyhow::Result<LoadResult> {
    let r = load::run(load).await?;
    if r.requests == 0 || r.errors > 0 {
        bail!(
            "{what} at concurrency {}: {} answered, {} failed",
            load.concurrency,
            r.requests,
            r.errors
        );
    }
    Ok(r)
}

/// `wasmtime serve`'s flags for `workload`, or why it cannot serve it.
fn wasmtime_flags(workload: &str) -> Result<Vec<&'static str>, String> {
    match workload {
        "search" => Ok(vec!["-Scli", "-Sconfig"]),
        // Measured with wasmtime-cli 48.0.8: `wasmtime serve -Skeyvalue -Sconfig` fails
        // to instantiate the payment component ("component imports instance
        // `wasi:keyvalue/store@0.2.0-draft2` … resource implementation is missing"):
        // serve does not link key-value stores.
        _ => Err("wasmtime serve 48 does not link wasi:keyvalue, which payment needs".into()),
    }
}

pub async fn compare_throughput(
    dabba: &Path,
    w: &Workload,
    wasmtime: Option<&Path>,
    sizes: &Sizes,
    logs: &Path,
) -> anyhow::Result<Vec<Throughput>> {
    let component = w.component.display().to_string();
    let mut per_target: Vec<Vec<LoadResult>> = Vec::new();
    eprintln!("containers: {} on dabba serve", w.name);
    let serve: Server = if w.name == "payment" {
        targets::dabba_serve(
            dabba,
            &w.component,
            &["--kv-bucket", "ledger", "--config", "bucket=ledger"],
            logs,
        )
        .await?
    } else {
        targets::dabba_serve(dabba, &w.component, &[], logs).await?
    };
    let mut rows = Vec::new();
    for &c in &sizes.concurrency {
        rows.push(
            measure_load(
                "dabba serve",
                &load_for(w.name, serve.addr, c, sizes.duration),
            )
            .await?,
        );
    }
    drop(serve);
    per_target.push(rows);

    eprintln!("containers: {} in a container", w.name);
    let port = free_port()?;
    let id = docker::run(&w.image, port, &[("DABBA_CONFIG_BUCKET", "ledger")]).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut rows = Vec::new();
    let measured = async {
        until_answers(port, "/health", Duration::from_secs(60)).await?;
        for &c in &sizes.concurrency {
            rows.push(
                measure_load("the container", &load_for(w.name, addr, c, sizes.duration)).await?,
            );
        }
        anyhow::Ok(())
    }
    .await;
    docker::remove(&[id]).await?;
    measured?;
    per_target.push(rows);

    let (wasmtime_rows, note) = match (wasmtime, wasmtime_flags(w.name)) {
        (None, _) => (
            None,
            Some("wasmtime not found (pass --wasmtime)".to_string()),
        ),
        (Some(_), Err(why)) => (None, Some(why)),
        (Some(bin), Ok(flags)) => {
            eprintln!("containers: {} on wasmtime serve", w.name);
            let target =
                targets::wasmtime_serve_with(bin, Path::new(&component), &flags, logs).await?;
            let mut rows = Vec::new();
            for &c in &sizes.concurrency {
                rows.push(
                    measure_load(
                        "wasmtime serve",
                        &load_for(w.name, target.addr, c, sizes.duration),
                    )
                    .await?,
                );
            }
            (Some(rows), None)
        }
    };
    Ok(sizes
        .concurrency
        .iter()
        .enumerate()
        .map(|(i, &concurrency)| {
            let dabba = per_target[0][i].clone();
            let container = per_target[1][i].clone();
            let wasmtime = wasmtime_rows.as_ref().map(|r| r[i].clone());
            Throughput {
                workload: w.name,
                concurrency,
                dabba_over_container: ratio(dabba.rps, Some(container.rps)),
                dabba_over_wasmtime: ratio(dabba.rps, wasmtime.as_ref().map(|w| w.rps)),
                dabba,
                container,
                wasmtime,
                wasmtime_note: note.clone(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payment_load_makes_a_new_payment_each_time() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let l = load_for("payment", addr, 4, Duration::from_secs(1));
        assert_eq!(l.method, http::Method::POST);
        assert_eq!(l.unique_header.as_deref(), Some("idempotency-key"));
        let s = load_for("search", addr, 4, Duration::from_secs(1));
        assert_eq!(s.method, http::Method::GET);
        assert!(s.path.starts_with("/search?q="));
    }
}
