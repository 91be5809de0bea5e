//! The three sample workloads end to end: payment and search through `dabba serve`,
//! settlement through `dabba run`, sharing a durable key-value directory.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

fn payment_body(merchant: &str, amount: u64) -> String {
    format!(
        r#"{{"merchant_id":"{merchant}","payer_vpa":"asha.k@okhdfc","amount":{amount},"currency":"INR"}}"#
    )
}

fn pay(s: &Served, key: &str, body: &str) -> Reply {
    s.post(
        "/payments",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        body.as_bytes(),
    )
}

#[test]
fn payment_api_over_a_real_socket() {
    let kv = tempfile::tempdir().unwrap();
    let s = serve(
        &guest("payment"),
        &["--kv-dir", kv.path().to_str().unwrap()],
    );
    assert_eq!(s.get("/health").status, 200);

    let created = pay(&s, "order-1", &payment_body("m_chai", 250_050));
    assert_eq!(created.status, 201, "{}", created.text());
    let p = created.json();
    assert_eq!(p["amount"], 250_050);
    assert_eq!(p["fee"], 2_751);
    assert_eq!(p["currency"], "INR");
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(
        created.header("location"),
        Some(format!("/payments/{id}").as_str())
    );

    let replay = pay(&s, "order-1", &payment_body("m_chai", 250_050));
    assert_eq!(replay.status, 201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json(), p);

    // An idempotency key is scoped to its merchant: the same merchant and key with
    // another body is refused; another merchant with the same key is a new payment.
    let conflict = pay(&s, "order-1", &payment_body("m_chai", 999));
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.json()["error"]["code"], "idempotency_key_reused");
    let other = pay(&s, "order-1", &payment_body("m_dosa", 999));
    assert_eq!(other.status, 201, "{}", other.text());
    assert_eq!(other.header("idempotent-replayed"), None);
    let other = other.json();
    assert_ne!(
        other["id"], p["id"],
        "another merchant's key makes its own payment"
    );
    assert_eq!(
        (&other["merchant_id"], &other["amount"]),
        (&"m_dosa".into(), &999.into())
    );
    assert_eq!(
        s.get(&format!("/payments/{id}")).json(),
        p,
        "the first is untouched"
    );

    let fetched = s.get(&format!("/payments/{id}"));
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json(), p);
    assert_eq!(s.get("/payments/pay_nope").status, 404);

    let missing_key = s.post("/payments", &[], payment_body("m", 100).as_bytes());
    assert_eq!(missing_key.status, 400);
    let float = pay(
        &s,
        "order-2",
        &payment_body("m", 100).replace("100", "10.5"),
    );
    assert_eq!(float.status, 400);
    let too_big = pay(&s, "order-3", &payment_body("m", 100_000_01));
    assert_eq!(too_big.status, 422);
    assert_eq!(too_big.json()["error"]["code"], "amount_too_large");

    // The payment survives a restart of the server.
    s.stop();
    let s = serve(
        &guest("payment"),
        &["--kv-dir", kv.path().to_str().unwrap()],
    );
    assert_eq!(s.get(&format!("/payments/{id}")).json(), p);
}

#[test]
fn concurrent_duplicate_payments_make_one_ledger_entry() {
    let kv = tempfile::tempdir().unwrap();
    let kv_dir = kv.path().to_str().unwrap().to_string();
    let s = serve(&guest("payment"), &["--kv-dir", &kv_dir]);
    let addr = s.addr;
    let body = payment_body("m_dup", 4_999_00);
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || {
                request(
                    addr,
                    "POST",
                    "/payments",
                    &[
                        ("content-type", "application/json"),
                        ("idempotency-key", "same-key"),
                    ],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    let replies: Vec<Reply> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: Vec<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.text());
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let date = replies[0].json()["ledger_date"]
        .as_str()
        .unwrap()
        .to_string();
    s.stop();

    // The settlement of that day counts exactly one payment.
    let settlement = guest("settlement");
    let out = run_dabba(
        &[
            "run",
            settlement.to_str().unwrap(),
            "--kv-dir",
            &kv_dir,
            "--",
            "--date",
            &date,
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "settlement for {date} (IST): 1 payments from 1 merchants"
        )),
        "{}",
        stdout(&out)
    );
}

#[test]
fn settlement_totals_match_an_independent_computation_and_rerun_changes_nothing() {
    let kv = tempfile::tempdir().unwrap();
    let kv_dir = kv.path().to_str().unwrap().to_string();
    let s = serve(&guest("payment"), &["--kv-dir", &kv_dir]);
    // Independent books: per merchant (payments, gross, fees) from the API's answers.
    let mut books: Books = BTreeMap::new();
    let mut date = String::new();
    for i in 0..60u64 {
        let merchant = format!("m_{}", i % 4);
        let amount = 1_000 + i * 13_337;
        let r = pay(&s, &format!("k-{i}"), &payment_body(&merchant, amount));
        assert_eq!(r.status, 201, "{}", r.text());
        date = book(&mut books, merchant, amount, &r.json());
    }
    s.stop();

    let settlement = guest("settlement");
    let run = || {
        run_dabba(
            &[
                "run",
                settlement.to_str().unwrap(),
                "--kv-dir",
                &kv_dir,
                "--",
                "--date",
                &date,
            ],
            Duration::from_secs(60),
        )
    };
    let first = run();
    assert!(first.status.success(), "{}", stderr(&first));
    let second = run();
    assert!(second.status.success(), "{}", stderr(&second));
    check_settlement(&books, &stdout(&first), &stdout(&second));
}

/// Per merchant: payments, gross and fees (paise), as the payment API answered them.
pub type Books = BTreeMap<String, (u64, u64, u64)>;

/// Enters one payment the API accepted (`answer`) in `books`; returns its ledger date.
pub fn book(
    books: &mut Books,
    merchant: String,
    amount: u64,
    answer: &serde_json::Value,
) -> String {
    let e = books.entry(merchant).or_default();
    e.0 += 1;
    e.1 += amount;
    e.2 += answer["fee"].as_u64().unwrap();
    answer["ledger_date"].as_str().unwrap().to_string()
}

/// Checks a settlement report against independent books (18% GST on fees, rounded to
/// the paisa; net = gross − fees − GST), and that a second run of the same date
/// (`again`) changed nothing and printed the same totals.
pub fn check_settlement(books: &Books, text: &str, again: &str) {
    let rupees = |p: u64| format!("{}.{:02}", p / 100, p % 100);
    let (mut count, mut gross, mut fees, mut gst, mut net) = (0, 0, 0, 0, 0);
    for (merchant, (n, g, f)) in books {
        let t = (f * 18 + 50) / 100;
        let line = text
            .lines()
            .find(|l| l.starts_with(merchant.as_str()))
            .unwrap_or_else(|| panic!("no line for {merchant} in\n{text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols[1..],
            [
                n.to_string(),
                rupees(*g),
                rupees(*f),
                rupees(t),
                rupees(g - f - t)
            ],
            "{line}"
        );
        count += n;
        gross += g;
        fees += f;
        gst += t;
        net += g - f - t;
    }
    let total: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        total[1..],
        [
            count.to_string(),
            rupees(gross),
            rupees(fees),
            rupees(gst),
            rupees(net)
        ]
    );
    assert!(text.contains("settled: wrote"), "{text}");
    assert!(again.contains("already settled"), "{again}");
    let table = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("settled") && !l.starts_with("already"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(table(again), table(text), "a rerun prints the same totals");
}

#[test]
fn settlement_without_a_date_fails_clearly() {
    let out = run_dabba(
        &["run", guest("settlement").to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out).contains("no settlement date given"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn search_api_over_a_real_socket() {
    let s = serve(&guest("search"), &[]);
    let r =
        s.get("/search?q=samsng+phone&category=Mobiles&max_price=20000&sort=price_asc&page_size=5");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["corrections"][0],
        serde_json::json!(["samsng", "samsung"])
    );
    let results = v["results"].as_array().unwrap();
    assert!(!results.is_empty());
    let prices: Vec<u64> = results
        .iter()
        .map(|h| h["price"].as_u64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]));
    assert!(prices.iter().all(|p| *p <= 20_000_00));
    assert!(
        results
            .iter()
            .all(|h| h["brand"] == "Samsung" && h["category"] == "Mobiles")
    );
    assert_eq!(s.get("/search?page=0").status, 400);
    assert_eq!(s.get("/nope").status, 404);
}

#[test]
fn search_ranking_is_chosen_by_config() {
    let v1 = serve(&guest("search"), &[]);
    let v2 = serve(&guest("search"), &["--config", "ranking=v2"]);
    let a = v1.get("/search?q=laptop&page_size=10").json();
    let b = v2.get("/search?q=laptop&page_size=10").json();
    assert_eq!(a["ranking"], "v1");
    assert_eq!(b["ranking"], "v2");
    assert_eq!(a["total"], b["total"]);
    assert_ne!(a["results"], b["results"]);
    let bad = serve(&guest("search"), &["--config", "ranking=v9"]);
    let r = bad.get("/search?q=laptop");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("ranking"), "{}", r.text());
}
