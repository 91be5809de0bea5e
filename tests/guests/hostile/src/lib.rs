//! A component that does, on request, everything a host must survive or refuse:
//!
//! Any route takes `after_ms=N` to wait N ms (blocked in the host) before it starts.
//!
//! A deliberately bad revision, by configuration (for rollout tests and demos): with
//! `fail_percent = "30"` about 30% of requests to any route answer 500 (chosen at
//! random), and with `delay_ms = "N"` every request takes N ms longer.
//!
//! | route | behaviour |
//! |---|---|
//! | `/ok` | 200 `ok` |
//! | `/spin` | loops forever |
//! | `/alloc?mb=N` | allocates and touches N MiB, 1 MiB at a time |
//! | `/recurse` | recurses without bound |
//! | `/sleep?ms=N` | sleeps (blocked in the host, not computing) |
//! | `/panic` | panics |
//! | `/echo` | answers with the request body |
//! | `/big?kb=N` | answers with N KiB |
//! | `/env` | the environment it sees, as JSON |
//! | `/headers` | the request headers it sees, as JSON |
//! | `/config?key=K` | a `wasi:config` value |
//! | `/fs` | tries to list `/` |
//! | `/kv?bucket=B` | increments `hits` in bucket B and returns it |
//! | `/outbound?url=U` | makes an outbound GET to U |
//! | `/log?line=T&n=N` | prints `T #0` … `T #N-1` on stdout, then `T done` on stderr |

use dabba_sdk::{HttpError, Method, Request, Response};

pub fn handle(req: Request) -> Response {
    let param = |name: &str| req.query_param(name).unwrap_or_default();
    let num = |name: &str| param(name).parse::<u64>().unwrap_or(0);
    // `after_ms` delays any route, so a test can have it in flight for a while first.
    if num("after_ms") > 0 {
        std::thread::sleep(std::time::Duration::from_millis(num("after_ms")));
    }
    let configured = |key: &str| {
        dabba_sdk::config::get(key)
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let delay = configured("delay_ms");
    if delay > 0 {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    if configured("fail_percent") > random() % 100 {
        return Response::text(500, "failed on purpose (fail_percent)");
    }
    match (req.method.clone(), req.path.as_str()) {
        (_, "/ok") => Response::text(200, "ok"),
        (_, "/spin") => {
            let mut x: u64 = 1;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        (_, "/alloc") => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            for _ in 0..num("mb") {
                hoard.push(vec![7u8; 1 << 20]);
            }
            Response::text(200, format!("allocated {} MiB", hoard.len()))
        }
        (_, "/recurse") => Response::text(200, format!("{}", recurse(std::hint::black_box(1)))),
        (_, "/sleep") => {
            std::thread::sleep(std::time::Duration::from_millis(num("ms")));
            Response::text(200, "slept")
        }
        (_, "/panic") => panic!("the guest panicked on purpose"),
        (Method::Post, "/echo") => Response::new(200).with_body(req.body.clone()),
        (_, "/big") => Response::new(200).with_body(vec![b'x'; (num("kb") * 1024) as usize]),
        (_, "/headers") => {
            let seen: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                .collect();
            Response::json(200, &seen)
        }
        (_, "/env") => {
            let vars: Vec<(String, String)> = std::env::vars().collect();
            Response::json(200, &vars)
        }
        (_, "/config") => match dabba_sdk::config::get(&param("key")) {
            Ok(v) => Response::json(200, &v),
            Err(e) => HttpError::internal(e.to_string()).into(),
        },
        (_, "/fs") => match std::fs::read_dir("/") {
            Ok(entries) => Response::text(200, format!("listed {} entries", entries.count())),
            Err(e) => Response::text(403, format!("filesystem denied: {e}")),
        },
        (_, "/kv") => {
            let bucket = match dabba_sdk::kv::Bucket::open(&param("bucket")) {
                Ok(b) => b,
                Err(e) => return Response::text(403, e.to_string()),
            };
            match bucket.increment("hits", 1) {
                Ok(n) => Response::text(200, n.to_string()),
                Err(e) => Response::text(500, e.to_string()),
            }
        }
        (_, "/outbound") => outbound(&param("url")),
        (_, "/log") => {
            let line = param("line");
            for i in 0..num("n") {
                println!("{line} #{i}");
            }
            eprintln!("{line} done");
            Response::text(200, "logged")
        }
        _ => Response::text(404, "no such route"),
    }
}

/// A random number (std's hasher keys come from `wasi:random`).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[allow(
    unconditional_recursion,
    reason = "deep recursion is the point: the host must trap it"
)]
fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    recurse(pad[3] + 1) + pad[7]
}

#[cfg(target_arch = "wasm32")]
fn outbound(url: &str) -> Response {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let Some((scheme, rest)) = url.split_once("://") else {
        return Response::text(400, "url needs a scheme");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let req = OutgoingRequest::new(Fields::new());
    let _ = req.set_scheme(Some(&if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    }));
    let _ = req.set_authority(Some(authority));
    let _ = req.set_path_with_query(Some(path));
    match outgoing_handler::handle(req, None) {
        Err(e) => Response::text(502, format!("outbound refused: {e:?}")),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(resp))) => {
                    Response::text(200, format!("upstream answered {}", resp.status()))
                }
                Some(Ok(Err(e))) => Response::text(502, format!("outbound refused: {e:?}")),
                other => Response::text(502, format!("outbound failed: {other:?}")),
            }
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn outbound(_url: &str) -> Response {
    Response::text(501, "outbound needs the wasm build")
}

dabba_sdk::http_component!(handle);
