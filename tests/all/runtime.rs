//! One host runtime running several apps at once, as a host will: shared engines and
//! cache, separate limits, and key-value state scoped per app namespace.

use std::sync::Arc;

use bytes::Bytes;
use dabba_host::AppConfig;
use dabba_host::ComponentBytes;
use dabba_host::kv::{KvBackend, MemoryKv};
use dabba_host::runtime::{Runtime, RuntimeOptions};
use dabba_spec::{Capabilities, LimitOverrides, WorkloadKind};
use http_body_util::{BodyExt, Full};

use crate::support::guest;

fn app(name: &str, scope: &str, kv: &Arc<MemoryKv>, fuel: Option<u64>) -> AppConfig {
    AppConfig {
        name: name.into(),
        revision: None,
        scope: scope.into(),
        limits: LimitOverrides {
            fuel,
            ..Default::default()
        }
        .resolve(WorkloadKind::Http)
        .unwrap(),
        capabilities: Capabilities {
            key_value_buckets: vec!["default".into()],
            ..Default::default()
        },
        secrets: Default::default(),
        kv: kv.clone() as Arc<dyn KvBackend>,
        log: None,
    }
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header("host", "test")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn text(resp: dabba_host::function::HttpResponse) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_apps_share_one_runtime_with_their_own_limits_and_state() {
    let runtime = Runtime::new(&RuntimeOptions::default()).unwrap();
    let kv = Arc::new(MemoryKv::new());
    let hostile = ComponentBytes::read(&guest("hostile")).unwrap();
    let search = ComponentBytes::read(&guest("search")).unwrap();

    // The same component as two apps in two namespaces, one with a fuel budget.
    let shop = Arc::new(
        runtime
            .load_http(app("shop", "shop", &kv, None), &hostile)
            .unwrap(),
    );
    let bank = Arc::new(
        runtime
            .load_http(app("bank", "bank", &kv, Some(20_000_000)), &hostile)
            .unwrap(),
    );
    let finder = Arc::new(
        runtime
            .load_http(app("finder", "shop", &kv, None), &search)
            .unwrap(),
    );
    assert_eq!(shop.digest(), bank.digest());

    // Requests to all three at once.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (shop, bank, finder) = (shop.clone(), bank.clone(), finder.clone());
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                0 => text(shop.handle(get("/kv?bucket=default")).await).await,
                1 => text(bank.handle(get("/kv?bucket=default")).await).await,
                _ => text(finder.handle(get("/search?q=kettle&page_size=1")).await).await,
            }
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }

    // Each namespace counted only its own ten hits.
    assert_eq!(
        kv.get("shop/default", "hits").await.unwrap(),
        Some(b"10".to_vec())
    );
    assert_eq!(
        kv.get("bank/default", "hits").await.unwrap(),
        Some(b"10".to_vec())
    );

    // Limits are per app: the fuel budget stops only `bank`'s runaway request.
    let (bank_status, body) = text(bank.handle(get("/spin")).await).await;
    assert_eq!(bank_status, 500, "{body}");
    assert!(body.contains("fuel limit"), "{body}");
    let (status, _) = text(shop.handle(get("/ok")).await).await;
    assert_eq!(status, 200);
    let metrics = runtime.metrics().render();
    assert!(
        metrics.contains(r#"dabba_limit_hits_total{app="bank",limit="fuel"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dabba_limit_hits_total{app="shop",limit="fuel"} 0"#),
        "{metrics}"
    );
}
