//! The container comparison's report: Markdown with every figure next to its baseline
//! and the ratio, and one SVG chart per measurement (`crate::chart`).

use super::Report;
use crate::chart::{Bar, bars};
use crate::load::LoadResult;
use crate::stats::{format_ratio, thousands};

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn kib(v: f64) -> String {
    if v >= 10_240.0 {
        format!("{:.1} MiB", v / 1024.0)
    } else {
        format!("{v:.0} KiB")
    }
}

/// The Markdown report. Every figure sits next to its baseline and the ratio.
pub fn render(r: &Report) -> String {
    let c = &r.cold_start;
    let mut md = format!(
        "## dabba vs Docker containers (Docker {})\n\n\
         ### Cold start: zero to first 200 (search)\n\n\
         | | p50 | p99 | samples |\n|---|---|---|---|\n\
         | dabba (scaled to zero on `dabba up`) | {} | {} | {} |\n\
         | `docker run` of the native image (baseline) | {} | {} | {} |\n\n\
         dabba is **{}** faster at p50 ({} at p99); goal ≥ 100×.\n\n",
        r.docker_version,
        ms(c.dabba.p50_ms),
        ms(c.dabba.p99_ms),
        c.dabba.samples,
        ms(c.docker.p50_ms),
        ms(c.docker.p99_ms),
        c.docker.samples,
        format_ratio(c.speedup_p50),
        format_ratio(c.speedup_p99),
    );
    md.push_str(
        "### Scale-out 0 → N ready replicas, and memory per replica (search)\n\n\
         | N | dabba | docker (baseline) | dabba faster | dabba per replica (all of dabba / N) | pods' own share | container per replica (cgroup + runtime) | dabba smaller |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in &r.scale_out {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ({} + {}) | {} |\n",
            s.replicas,
            ms(s.dabba_ms),
            ms(s.docker_ms),
            format_ratio(s.speedup),
            kib(s.dabba_kib_per_replica),
            kib(s.dabba_added_kib_per_replica),
            kib(s.docker_kib_per_replica),
            kib(s.docker_cgroup_kib_per_replica),
            kib(s.docker_runtime_kib_per_replica),
            format_ratio(s.memory_ratio),
        ));
    }
    md.push_str("\nMemory goal: dabba ≥ 20× smaller per replica.\n\n### Artifact size\n\n| workload | component | image (baseline) | component smaller |\n|---|---|---|---|\n");
    for a in &r.artifacts {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            a.workload,
            kib(a.component_bytes as f64 / 1024.0),
            kib(a.image_bytes as f64 / 1024.0),
            format_ratio(a.image_over_component),
        ));
    }
    md.push_str("\n### Throughput and latency (requests/s, p50 / p99)\n\n| workload | concurrency | dabba serve | container (baseline) | vs container | wasmtime serve | vs wasmtime |\n|---|---|---|---|---|---|---|\n");
    let cell = |l: &LoadResult| {
        format!(
            "{}/s, {:.2} / {:.2} ms",
            thousands(l.rps),
            l.latency.p50_us / 1000.0,
            l.latency.p99_us / 1000.0
        )
    };
    for t in &r.throughput {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            t.workload,
            t.concurrency,
            cell(&t.dabba),
            cell(&t.container),
            format_ratio(t.dabba_over_container),
            t.wasmtime
                .as_ref()
                .map(cell)
                .unwrap_or_else(|| format!("n/a: {}", t.wasmtime_note.clone().unwrap_or_default())),
            format_ratio(t.dabba_over_wasmtime),
        ));
    }
    md.push_str("\nThroughput goals: dabba ≥ 0.5× the container and ≥ 2.5× `wasmtime serve`.\n");
    md
}

/// One SVG chart per measurement, by file name.
pub fn charts(r: &Report) -> Vec<(String, String)> {
    let c = &r.cold_start;
    let mut out = vec![(
        "cold-start.svg".to_string(),
        bars(
            "Cold start, zero to first 200 (p50)",
            &format!(
                "search; lower is better; dabba {} faster",
                format_ratio(c.speedup_p50)
            ),
            &[
                Bar::new("dabba", c.dabba.p50_ms, ms(c.dabba.p50_ms)),
                Bar::new("docker run", c.docker.p50_ms, ms(c.docker.p50_ms)),
            ],
        ),
    )];
    let mut scale = Vec::new();
    let mut memory = Vec::new();
    for s in &r.scale_out {
        scale.push(Bar::new(
            format!("dabba, N = {}", s.replicas),
            s.dabba_ms,
            ms(s.dabba_ms),
        ));
        scale.push(Bar::new(
            format!("docker, N = {}", s.replicas),
            s.docker_ms,
            ms(s.docker_ms),
        ));
        memory.push(Bar::new(
            format!("dabba, N = {}", s.replicas),
            s.dabba_kib_per_replica,
            kib(s.dabba_kib_per_replica),
        ));
        memory.push(Bar::new(
            format!("docker, N = {}", s.replicas),
            s.docker_kib_per_replica,
            kib(s.docker_kib_per_replica),
        ));
    }
    out.push((
        "scale-out.svg".into(),
        bars(
            "Scale-out 0 → N ready replicas",
            "search; lower is better",
            &scale,
        ),
    ));
    out.push((
        "memory-per-replica.svg".into(),
        bars("Memory per replica", "search; lower is better", &memory),
    ));
    let sizes: Vec<Bar> = r
        .artifacts
        .iter()
        .flat_map(|a| {
            [
                Bar::new(
                    format!("dabba component, {}", a.workload),
                    a.component_bytes as f64,
                    kib(a.component_bytes as f64 / 1024.0),
                ),
                Bar::new(
                    format!("image, {}", a.workload),
                    a.image_bytes as f64,
                    kib(a.image_bytes as f64 / 1024.0),
                ),
            ]
        })
        .collect();
    out.push((
        "artifact-size.svg".into(),
        bars("Artifact size", "lower is better", &sizes),
    ));
    for workload in ["payment", "search"] {
        let rows: Vec<Bar> = r
            .throughput
            .iter()
            .filter(|t| t.workload == workload)
            .flat_map(|t| {
                let mut b = vec![
                    Bar::new(
                        format!("dabba, c = {}", t.concurrency),
                        t.dabba.rps,
                        format!("{}/s", thousands(t.dabba.rps)),
                    ),
                    Bar::new(
                        format!("container, c = {}", t.concurrency),
                        t.container.rps,
                        format!("{}/s", thousands(t.container.rps)),
                    ),
                ];
                if let Some(w) = &t.wasmtime {
                    b.push(Bar::new(
                        format!("wasmtime serve, c = {}", t.concurrency),
                        w.rps,
                        format!("{}/s", thousands(w.rps)),
                    ));
                }
                b
            })
            .collect();
        out.push((
            format!("throughput-{workload}.svg"),
            bars(
                &format!("Throughput, {workload}"),
                "requests/s; higher is better",
                &rows,
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Artifact, ColdStart, ScaleOut, Throughput};
    use super::*;
    use crate::stats::{ColdStarts, Latency};

    fn load(rps: f64) -> LoadResult {
        LoadResult {
            requests: (rps * 5.0) as u64,
            errors: 0,
            seconds: 5.0,
            rps,
            latency: Latency {
                p50_us: 1500.0,
                p90_us: 2000.0,
                p99_us: 4000.0,
                max_us: 9000.0,
            },
        }
    }

    fn cold(p50: f64, p99: f64) -> ColdStarts {
        ColdStarts {
            samples: 20,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: p99,
        }
    }

    fn report() -> Report {
        Report {
            docker_version: "20.10.24".into(),
            artifacts: vec![Artifact {
                workload: "search",
                component_bytes: 512 * 1024,
                image_bytes: 4 * 1024 * 1024,
                image_over_component: Some(8.0),
            }],
            cold_start: ColdStart {
                dabba: cold(2.5, 5.0),
                docker: cold(500.0, 700.0),
                speedup_p50: Some(200.0),
                speedup_p99: Some(140.0),
            },
            scale_out: vec![ScaleOut {
                replicas: 10,
                dabba_ms: 20.0,
                docker_ms: 4000.0,
                speedup: Some(200.0),
                dabba_kib_per_replica: 6000.0,
                dabba_added_kib_per_replica: 100.0,
                docker_kib_per_replica: 18_000.0,
                docker_cgroup_kib_per_replica: 2_000.0,
                docker_runtime_kib_per_replica: 16_000.0,
                memory_ratio: Some(3.0),
            }],
            throughput: vec![Throughput {
                workload: "payment",
                concurrency: 32,
                dabba: load(9000.0),
                container: load(12000.0),
                wasmtime: None,
                wasmtime_note: Some("no named buckets".into()),
                dabba_over_container: Some(0.75),
                dabba_over_wasmtime: None,
            }],
        }
    }

    #[test]
    fn the_report_puts_each_figure_next_to_its_baseline_and_ratio() {
        let md = render(&report());
        for expect in [
            "| dabba (scaled to zero on `dabba up`) | 2.50 ms | 5.00 ms | 20 |",
            "| `docker run` of the native image (baseline) | 500 ms | 700 ms | 20 |",
            "dabba is **200×** faster at p50 (140× at p99)",
            "| 10 | 20 ms | 4000 ms | 200× | 6000 KiB | 100 KiB | 17.6 MiB (2000 KiB + 15.6 MiB) | 3.00× |",
            "| search | 512 KiB | 4096 KiB | 8.00× |",
            "| payment | 32 | 9,000/s, 1.50 / 4.00 ms | 12,000/s, 1.50 / 4.00 ms | 0.750× | n/a: no named buckets | n/a |",
        ] {
            assert!(md.contains(expect), "missing `{expect}` in\n{md}");
        }
    }

    #[test]
    fn every_measurement_has_a_chart() {
        let charts = charts(&report());
        let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "cold-start.svg",
                "scale-out.svg",
                "memory-per-replica.svg",
                "artifact-size.svg",
                "throughput-payment.svg",
                "throughput-search.svg"
            ]
        );
        assert!(charts[0].1.contains("200× faster"));
    }
}
