//! A `wasi:cli` command for testing `dabba run`. The first argument picks a behaviour:
//!
//! | args | behaviour |
//! |---|---|
//! | `echo A B…` | prints its arguments, one per line, and exits 0 |
//! | `env` | prints the environment it sees |
//! | `config K…` | prints `K=VALUE` for each `wasi:config` key (`K=` if it has none) |
//! | `fail MSG` | prints MSG on stderr and exits 3 |
//! | `spin` | loops forever |
//! | `sleep MS` | sleeps MS milliseconds, then prints `slept` |
//! | `tick N MS` | prints `tick 0` … `tick N-1`, sleeping MS milliseconds after each |
//! | `alloc N` | allocates N MiB |
//! | `flood N` | writes N KiB to stdout |
//! | `kv BUCKET` | increments `runs` in BUCKET and prints it |
//! | `tally BUCKET [MS]` | increments the key named by `DABBA_RUN` in BUCKET, prints it, then sleeps MS milliseconds |

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    match args.first().map(String::as_str) {
        Some("echo") => {
            for a in &args[1..] {
                println!("{a}");
            }
        }
        Some("tick") => {
            for i in 0..n(1) {
                println!("tick {i}");
                std::thread::sleep(std::time::Duration::from_millis(n(2)));
            }
        }
        Some("env") => {
            for (k, v) in std::env::vars() {
                println!("{k}={v}");
            }
        }
        Some("config") => {
            for k in &args[1..] {
                let v = dabba_sdk::config::get(k).ok().flatten().unwrap_or_default();
                println!("{k}={v}");
            }
        }
        Some("fail") => {
            eprintln!("{}", args.get(1).cloned().unwrap_or_default());
            return ExitCode::from(3);
        }
        Some("spin") => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        Some("sleep") => {
            std::thread::sleep(std::time::Duration::from_millis(n(1)));
            println!("slept");
        }
        Some("alloc") => {
            let mut hoard = Vec::new();
            for _ in 0..n(1) {
                hoard.push(vec![1u8; 1 << 20]);
            }
            println!("allocated {} MiB", hoard.len());
        }
        Some("flood") => {
            let chunk = [b'y'; 1024];
            let mut out = std::io::stdout().lock();
            for _ in 0..n(1) {
                if out.write_all(&chunk).is_err() {
                    return ExitCode::from(4);
                }
            }
        }
        Some(verb @ ("kv" | "tally")) => {
            let key = if verb == "kv" {
                "runs".to_string()
            } else {
                std::env::var("DABBA_RUN").unwrap_or_default()
            };
            match dabba_sdk::kv::Bucket::open(args.get(1).map(String::as_str).unwrap_or("default"))
            {
                Ok(b) => match b.increment(&key, 1) {
                    Ok(v) => {
                        println!("{key}={v}");
                        std::thread::sleep(std::time::Duration::from_millis(n(2)));
                    }
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(1);
                    }
                },
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            }
        }
        _ => {
            eprintln!("usage: job (echo|env|fail|spin|sleep|tick|alloc|flood|kv|tally) ...");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
