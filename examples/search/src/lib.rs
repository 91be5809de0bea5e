//! Sample workload: product search over a 12,000-product catalogue.
//!
//! `GET /search?q=&category=&brand=&min_price=&max_price=&sort=&page=&page_size=` answers
//! with BM25-ranked, typo-tolerant, filtered and paginated results. Prices in the query
//! are rupees (`499` or `499.50`); prices in results are paise. `sort` is `relevance`
//! (default), `price_asc`, `price_desc` or `rating`. The `ranking` configuration key
//! chooses `v1` (BM25) or `v2` (BM25 weighted by rating), so two revisions of this app
//! can be canaried against each other. `GET /health` answers 200.
//!
//! The catalogue is generated deterministically and indexed at build time (`build.rs`);
//! the index sits in the component's data segment, so a fresh instance per request does
//! no indexing work.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written rupees_paise: 2_000_00 is ₹2,000.00"
)]

pub mod catalogue;
pub mod format;
pub mod search;
pub mod text;

use dabba_sdk::{HttpError, Params, Request, Response, Router, config};
use serde::Serialize;

use crate::format::Index;
use crate::search::{Query, Ranking, Sort};

static INDEX_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/index.bin"));

/// The built-in catalogue's index.
pub fn index() -> Index<'static> {
    Index::open(INDEX_BYTES).expect("build.rs writes a valid index")
}

/// Results per page by default, and at most.
pub const DEFAULT_PAGE_SIZE: usize = 20;
pub const MAX_PAGE_SIZE: usize = 100;

pub struct App {
    pub ranking: Ranking,
}

impl App {
    pub fn from_config(ranking: Option<&str>) -> Result<App, HttpError> {
        let ranking = match ranking.map(str::trim) {
            None | Some("v1") => Ranking::V1,
            Some("v2") => Ranking::V2,
            Some(other) => {
                return Err(HttpError::internal(format!(
                    "search service misconfigured: config `ranking` is `{other}`, expected v1 or v2"
                )));
            }
        };
        Ok(App { ranking })
    }
}

pub fn router() -> Router<App> {
    Router::new()
        .get("/health", |_, _, _| {
            Ok(Response::json(200, &serde_json::json!({"status": "ok"})))
        })
        .get("/search", search_handler)
}

#[derive(Serialize)]
struct Answer<'a> {
    query: &'a str,
    #[serde(flatten)]
    results: search::Results,
}

fn search_handler(app: &App, req: &Request, _: &Params) -> Result<Response, HttpError> {
    let q = parse_query(req)?;
    let results = search::search(&index(), &q, app.ranking);
    Ok(Response::json(
        200,
        &Answer {
            query: &q.text,
            results,
        },
    ))
}

/// Reads the query parameters, rejecting unknown ones and bad values with a 400 that
/// names the parameter.
pub fn parse_query(req: &Request) -> Result<Query, HttpError> {
    let bad = |name: &str, msg: String| {
        HttpError::bad_request("invalid_parameter", format!("`{name}`: {msg}"))
    };
    let mut q = Query {
        text: String::new(),
        category: None,
        brand: None,
        min_price: None,
        max_price: None,
        sort: Sort::Relevance,
        page: 1,
        page_size: DEFAULT_PAGE_SIZE,
    };
    let price = |name: &str, v: &str| -> Result<u32, HttpError> {
        ledger_price(v).ok_or_else(|| {
            bad(
                name,
                format!("`{v}` is not a price in rupees such as 499 or 499.50"),
            )
        })
    };
    for (k, v) in req.query_pairs() {
        match k.as_str() {
            "q" => q.text = v,
            "category" if !v.is_empty() => q.category = Some(v),
            "brand" if !v.is_empty() => q.brand = Some(v),
            "category" | "brand" => {}
            "min_price" => q.min_price = Some(price("min_price", &v)?),
            "max_price" => q.max_price = Some(price("max_price", &v)?),
            "sort" => {
                q.sort = match v.as_str() {
                    "" | "relevance" => Sort::Relevance,
                    "price_asc" => Sort::PriceAsc,
                    "price_desc" => Sort::PriceDesc,
                    "rating" => Sort::Rating,
                    other => {
                        return Err(bad(
                            "sort",
                            format!(
                                "`{other}` is not one of relevance, price_asc, price_desc, rating"
                            ),
                        ));
                    }
                }
            }
            "page" => {
                q.page = v
                    .parse()
                    .ok()
                    .filter(|p: &usize| *p >= 1 && *p <= 10_000)
                    .ok_or_else(|| {
                        bad(
                            "page",
                            format!("`{v}` is not a page number from 1 to 10000"),
                        )
                    })?
            }
            "page_size" => {
                q.page_size = v
                    .parse()
                    .ok()
                    .filter(|p: &usize| (1..=MAX_PAGE_SIZE).contains(p))
                    .ok_or_else(|| {
                        bad(
                            "page_size",
                            format!("`{v}` is not from 1 to {MAX_PAGE_SIZE}"),
                        )
                    })?
            }
            other => {
                return Err(bad(
                    other,
                    "unknown parameter; expected q, category, brand, min_price, max_price, sort, page, page_size".into(),
                ));
            }
        }
    }
    if let (Some(lo), Some(hi)) = (q.min_price, q.max_price)
        && lo > hi
    {
        return Err(bad("min_price", "is greater than max_price".into()));
    }
    Ok(q)
}

/// Rupees as text (`499`, `499.5`, `499.50`) to paise.
fn ledger_price(s: &str) -> Option<u32> {
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty()
        || frac.len() > 2
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let frac: u32 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u32>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    whole
        .parse::<u32>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac)
}

/// The component's entry point.
pub fn handle(req: Request) -> Response {
    let ranking = match config::get("ranking") {
        Ok(r) => r,
        Err(e) => return HttpError::internal(e.to_string()).into(),
    };
    match App::from_config(ranking.as_deref()) {
        Ok(app) => router().handle(&app, &req),
        Err(e) => e.into(),
    }
}

dabba_sdk::http_component!(handle);

#[cfg(test)]
mod tests;
