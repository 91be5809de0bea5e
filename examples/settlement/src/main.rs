//! `settlement`: settle one IST day of the payment ledger.
//!
//! ```text
//! settlement --date 2026-11-25            settle that date
//! settlement --scheduled-time 2026-11-26T01:00:00+05:30
//!                                         settle the IST day before the scheduled time
//! (no flag, DABBA_SCHEDULED_TIME set)     the same, from the environment a cron run gets
//! --bucket NAME                           the ledger bucket (default: config `bucket`, else "default")
//! ```

use std::process::ExitCode;

use dabba_sdk::config;
use dabba_sdk::job::{self, JobError};
use dabba_sdk::kv::Bucket;
use dabba_sdk::time::Date;
use settlement::{Outcome, date_for_schedule, settle, summary};

const USAGE: &str = "usage: settlement (--date YYYY-MM-DD | --scheduled-time RFC3339) [--bucket NAME]\n\
                     With neither flag, the scheduled time is read from DABBA_SCHEDULED_TIME.";

fn main() -> ExitCode {
    job::run(|| {
        let mut date: Option<Date> = None;
        let mut bucket_name: Option<String> = None;
        let mut args = job::args().into_iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .ok_or_else(|| JobError::usage(format!("{flag} needs a value\n{USAGE}")))
            };
            match arg.as_str() {
                "--date" => {
                    let v = value("--date")?;
                    date = Some(
                        v.parse()
                            .map_err(|e| JobError::usage(format!("--date: {e}")))?,
                    );
                }
                "--scheduled-time" => {
                    let v = value("--scheduled-time")?;
                    date = Some(
                        date_for_schedule(&v)
                            .map_err(|e| JobError::usage(format!("--scheduled-time: {e}")))?,
                    );
                }
                "--bucket" => bucket_name = Some(value("--bucket")?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(());
                }
                other => {
                    return Err(JobError::usage(format!(
                        "unknown argument `{other}`\n{USAGE}"
                    )));
                }
            }
        }
        let date = match date {
            Some(d) => d,
            None => match std::env::var("DABBA_SCHEDULED_TIME") {
                Ok(t) => date_for_schedule(&t)
                    .map_err(|e| JobError::usage(format!("DABBA_SCHEDULED_TIME: {e}")))?,
                Err(_) => {
                    return Err(JobError::usage(format!(
                        "no settlement date given\n{USAGE}"
                    )));
                }
            },
        };
        let bucket_name = match bucket_name {
            Some(b) => b,
            None => config::get("bucket")?.unwrap_or_else(|| "default".into()),
        };
        let bucket = Bucket::open(&bucket_name)?;
        match settle(&bucket, date).map_err(|e| JobError::new(e.to_string()))? {
            Outcome::Settled(report) => {
                print!("{}", summary(&report));
                println!(
                    "settled: wrote settlement/{date}/report and {} merchant records",
                    report.merchants.len()
                );
            }
            Outcome::AlreadySettled(report) => {
                print!("{}", summary(&report));
                println!(
                    "already settled: {date} was settled before with these same totals; nothing written"
                );
            }
        }
        Ok(())
    })
}
