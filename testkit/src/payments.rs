//! Payment traffic as a payment API's clients make it, and the ledger check that counts
//! what a failure cost: the region tests and the regions benchmark both ask "was every
//! acknowledged payment kept, once?" and "when did requests stop failing?", and must
//! answer them the same way.
//!
//! A client sends one payment after another, each with its own idempotency key; a
//! payment that was not acknowledged (refused, or no answer within 5 s) is retried
//! with the same key, as a careful client does. Every attempt is recorded with when it
//! was sent, so recovery is measured by the requests clients sent, not by what the
//! control plane says about itself.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::exchange;

/// The payment every client books (the payment sample's request body).
pub const PAYMENT: &str =
    r#"{"merchant_id":"m_regions","payer_vpa":"asha@okhdfc","amount":1000,"currency":"INR"}"#;

/// How long a client waits for an answer before it gives up (and retries).
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Why a payment was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status it got (0: no answer within [`PATIENCE`]).
    pub status: u16,
    /// What the answer said (its body, cut to 200 bytes), or why there was none.
    pub why: String,
}

/// Books payment `key` through `ingress` (at `/payments`): the payment's id, or how it
/// was refused.
pub fn pay(ingress: SocketAddr, key: &str) -> Result<String, Refusal> {
    match exchange(
        ingress,
        "POST",
        "/payments",
        &[
            ("idempotency-key", key),
            ("content-type", "application/json"),
        ],
        PAYMENT.as_bytes(),
        PATIENCE,
    ) {
        Ok(r) if r.status == 201 || r.status == 200 => {
            Ok(r.json()["id"].as_str().unwrap_or_default().to_string())
        }
        Ok(r) => Err(Refusal {
            status: r.status,
            why: String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).into_owned(),
        }),
        Err(e) => Err(Refusal {
            status: 0,
            why: e.to_string(),
        }),
    }
}

/// One payment attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it was sent.
    pub sent: Instant,
    /// How long its answer (or the failure) took.
    pub took: Duration,
    /// Which client sent it (the label it was started with).
    pub client: String,
    /// 201 or 200: acknowledged; 0: no answer; else the status refused with.
    pub status: u16,
    /// Why it was refused (empty when acknowledged).
    pub why: String,
}

impl Attempt {
    pub fn acknowledged(&self) -> bool {
        matches!(self.status, 200 | 201)
    }
}

/// Clients paying, each on its own thread, until stopped.
pub struct PaymentLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Acknowledged payments: key → id.
    accepted: Arc<Mutex<BTreeMap<String, String>>>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
}

impl PaymentLoad {
    /// One client per `(label, ingress)`; keys are `{tag}-{label}-{n}`.
    pub fn start(clients: &[(String, SocketAddr)], tag: &str) -> PaymentLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let threads = clients
            .iter()
            .map(|(label, ingress)| {
                let (label, ingress, tag) = (label.clone(), *ingress, tag.to_string());
                let (stop, accepted, attempts) = (stop.clone(), accepted.clone(), attempts.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("{tag}-{label}-{n}");
                        let sent = Instant::now();
                        let r = pay(ingress, &key);
                        attempts.lock().expect("attempts").push(Attempt {
                            sent,
                            took: sent.elapsed(),
                            client: label.clone(),
                            status: r.as_ref().map_or_else(|e| e.status, |_| 201),
                            why: r.as_ref().err().map(|e| e.why.clone()).unwrap_or_default(),
                        });
                        match r {
                            Ok(id) => {
                                accepted.lock().expect("accepted").insert(key, id);
                                n += 1;
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                })
            })
            .collect();
        PaymentLoad {
            stop,
            threads,
            accepted,
            attempts,
        }
    }

    /// How many payments have been acknowledged so far.
    pub fn accepted(&self) -> usize {
        self.accepted.lock().expect("accepted").len()
    }

    /// What has happened so far: the acknowledged payments and every attempt.
    pub fn snapshot(&self) -> (BTreeMap<String, String>, Vec<Attempt>) {
        (
            self.accepted.lock().expect("accepted").clone(),
            self.attempts.lock().expect("attempts").clone(),
        )
    }

    /// Once every attempt sent since the last failure after `since` has succeeded for
    /// `clean` (and there were at least ten of them): how long after `since` that last
    /// failure was sent — zero if nothing failed. `None` while not yet.
    pub fn recovered_after(&self, since: Instant, clean: Duration) -> Option<Duration> {
        let a = self.attempts.lock().expect("attempts");
        let last_failure = a
            .iter()
            .filter(|t| t.sent >= since && !t.acknowledged())
            .map(|t| t.sent)
            .max()
            .unwrap_or(since);
        let after = a
            .iter()
            .filter(|t| t.sent > last_failure && t.acknowledged())
            .count();
        (last_failure.elapsed() >= clean && after >= 10).then(|| last_failure.duration_since(since))
    }

    /// Stops every client (after its request in flight) and returns what happened.
    pub fn stop(self) -> (BTreeMap<String, String>, Vec<Attempt>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let (accepted, attempts) = (self.accepted, self.attempts);
        let a = accepted.lock().expect("accepted").clone();
        let b = attempts.lock().expect("attempts").clone();
        (a, b)
    }
}

/// What the ledger holds of the acknowledged payments.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LedgerCheck {
    /// Acknowledged payments checked.
    pub acknowledged: usize,
    /// Acknowledged payments that do not read back (key: why).
    pub lost: BTreeMap<String, String>,
    /// Payments that share a ledger slot (date and sequence) with another.
    pub shared_slots: Vec<String>,
}

impl LedgerCheck {
    /// Every acknowledged payment kept, once.
    pub fn intact(&self) -> bool {
        self.lost.is_empty() && self.shared_slots.is_empty()
    }
}

/// Reads every acknowledged payment back through `ingress`: each must be there under
/// its own key, and no two may share a ledger slot.
pub fn check_ledger(ingress: SocketAddr, accepted: &BTreeMap<String, String>) -> LedgerCheck {
    let mut check = LedgerCheck {
        acknowledged: accepted.len(),
        ..LedgerCheck::default()
    };
    let mut slots = BTreeSet::new();
    // A 503 says "not now, retry" (a host still rejoining after a partition refuses
    // writes and reads alike): asked again for a while, unlike any other answer.
    let patience = std::time::Instant::now() + Duration::from_secs(30);
    for (key, id) in accepted {
        let read = || {
            exchange(
                ingress,
                "GET",
                &format!("/payments/{id}"),
                &[],
                b"",
                Duration::from_secs(30),
            )
        };
        let mut answer = read();
        while answer.as_ref().is_ok_and(|r| r.status == 503) && std::time::Instant::now() < patience
        {
            std::thread::sleep(Duration::from_millis(200));
            answer = read();
        }
        let r = match answer {
            Ok(r) => r,
            Err(e) => {
                check.lost.insert(key.clone(), format!("{id}: {e}"));
                continue;
            }
        };
        if r.status != 200 {
            check
                .lost
                .insert(key.clone(), format!("{id}: {} {}", r.status, r.text()));
            continue;
        }
        let p = r.json();
        if p["idempotency_key"] != key.as_str() {
            check
                .lost
                .insert(key.clone(), format!("{id} reads back as {p}"));
            continue;
        }
        let slot = (p["ledger_date"].to_string(), p["ledger_seq"].to_string());
        if !slots.insert(slot) {
            check.shared_slots.push(id.clone());
        }
    }
    check
}
