//! The index and the query path checked against the generated catalogue, computed
//! independently by brute force.

use super::*;
use crate::catalogue::{Product, generate};
use crate::text::tokens;
use dabba_sdk::Method;

fn get(path: &str, ranking: Ranking) -> Response {
    router().handle(&App { ranking }, &Request::new(Method::Get, path))
}

fn body(path: &str) -> serde_json::Value {
    let resp = get(path, Ranking::V1);
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    resp.json_body().unwrap()
}

fn words(p: &Product) -> Vec<String> {
    tokens(&format!("{} {} {}", p.title, p.brand, p.category))
}

#[test]
fn the_index_holds_the_whole_catalogue() {
    let idx = index();
    let products = generate();
    assert!(idx.doc_count() >= 10_000);
    assert_eq!(idx.doc_count(), products.len());
    for (i, p) in products.iter().enumerate().step_by(97) {
        let d = idx.doc(i);
        assert_eq!(d.title, p.title);
        assert_eq!(idx.brand(d.brand), p.brand);
        assert_eq!(idx.category(d.category), p.category);
        assert_eq!(d.price, p.price);
    }
}

#[test]
fn every_query_word_must_match() {
    let products = generate();
    let expected = products
        .iter()
        .filter(|p| {
            let w = words(p);
            w.contains(&"samsung".into()) && w.contains(&"phone".into())
        })
        .count();
    let v = body("/search?q=Samsung+phone&page_size=100");
    assert_eq!(v["total"], expected);
    assert!(expected > 0);
    for hit in v["results"].as_array().unwrap() {
        let title = hit["title"].as_str().unwrap().to_ascii_lowercase();
        assert!(
            title.contains("samsung") && title.contains("phone"),
            "{title}"
        );
    }
}

#[test]
fn typos_are_corrected() {
    let exact = body("/search?q=headphones&page_size=5");
    let typo = body("/search?q=headphnes&page_size=5");
    assert_eq!(
        typo["corrections"][0],
        serde_json::json!(["headphnes", "headphones"])
    );
    assert_eq!(exact["total"], typo["total"]);
    assert_eq!(exact["results"][0]["id"], typo["results"][0]["id"]);
    let nothing = body("/search?q=zzzzqqqq");
    assert_eq!(nothing["total"], 0);
    assert_eq!(nothing["unmatched"][0], "zzzzqqqq");
}

#[test]
fn filters_match_a_brute_force_count() {
    let products = generate();
    let expected = products
        .iter()
        .filter(|p| p.category == "Shoes" && p.price <= 999_00 && p.price >= 500_00)
        .count();
    let v = body("/search?category=shoes&min_price=500&max_price=999&sort=price_asc&page_size=100");
    assert_eq!(v["total"], expected);
    let prices: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["price"].as_u64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]));
    assert!(prices.iter().all(|p| (500_00..=999_00).contains(p)));
}

#[test]
fn bm25_scores_match_an_independent_computation() {
    let products = generate();
    let n = products.len() as f32;
    let lens: Vec<f32> = products.iter().map(|p| words(p).len() as f32).collect();
    let avg = lens.iter().sum::<f32>() / n;
    let df = products
        .iter()
        .filter(|p| words(p).contains(&"kettle".into()))
        .count() as f32;
    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
    let mut best = 0f32;
    for (p, dl) in products.iter().zip(&lens) {
        let tf = words(p).iter().filter(|w| *w == "kettle").count() as f32;
        if tf > 0.0 {
            let s = idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avg));
            best = best.max(s);
        }
    }
    let v = body("/search?q=kettle&page_size=1");
    let top = v["results"][0]["score"].as_f64().unwrap() as f32;
    assert!(
        (top - best).abs() < 0.01,
        "index {top} vs brute force {best}"
    );
}

#[test]
fn pages_do_not_overlap_and_add_up() {
    let all = body("/search?q=watch&page_size=40");
    let p1 = body("/search?q=watch&page_size=20&page=1");
    let p2 = body("/search?q=watch&page_size=20&page=2");
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect()
    };
    let mut joined = ids(&p1);
    joined.extend(ids(&p2));
    assert_eq!(joined, ids(&all));
    let beyond = body("/search?q=watch&page=10000");
    assert_eq!(beyond["results"].as_array().unwrap().len(), 0);
}

#[test]
fn ranking_v2_prefers_better_rated_products() {
    let v1: serde_json::Value = get("/search?q=laptop&page_size=10", Ranking::V1)
        .json_body()
        .unwrap();
    let v2: serde_json::Value = get("/search?q=laptop&page_size=10", Ranking::V2)
        .json_body()
        .unwrap();
    let avg_rating = |v: &serde_json::Value| -> f64 {
        let r = v["results"].as_array().unwrap();
        r.iter().map(|h| h["rating"].as_f64().unwrap()).sum::<f64>() / r.len() as f64
    };
    assert_eq!(v1["total"], v2["total"]);
    assert!(
        avg_rating(&v2) > avg_rating(&v1),
        "{} vs {}",
        avg_rating(&v2),
        avg_rating(&v1)
    );
    assert_eq!(v2["ranking"], "v2");
}

#[test]
fn bad_parameters_are_named() {
    for (path, name) in [
        ("/search?q=x&page=0", "page"),
        ("/search?page_size=1000", "page_size"),
        ("/search?sort=cheapest", "sort"),
        ("/search?min_price=abc", "min_price"),
        ("/search?min_price=10.555", "min_price"),
        ("/search?min_price=900&max_price=100", "min_price"),
        ("/search?colour=red", "colour"),
    ] {
        let resp = get(path, Ranking::V1);
        assert_eq!(resp.status, 400, "{path}");
        let v: serde_json::Value = resp.json_body().unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{name}`")),
            "{path}: {v}"
        );
    }
    assert!(App::from_config(Some("v3")).is_err());
}
