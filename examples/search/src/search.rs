//! Query evaluation: BM25 over title, brand and category, typo-tolerant term matching,
//! filters, sorting and pagination.
//!
//! Every query term must match a document (conjunctive search, as shoppers expect:
//! "samsung phone" should not list Samsung televisions). A term that is not in the
//! vocabulary is replaced by the vocabulary terms within one edit (terms of 4–7
//! letters) or two edits (8 letters or more); those matches score less than exact ones.
//! A term with no match at all is reported in `unmatched` and ignored.

use serde::Serialize;

use crate::format::Index;
use crate::text::{tokens, within_edits};

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalization.
const B: f32 = 0.75;
/// At most this many query terms are used; more are ignored.
pub const MAX_TERMS: usize = 8;
/// Score multiplier for a match one edit away, and two edits away.
const TYPO_WEIGHT: [f32; 3] = [1.0, 0.6, 0.3];

/// How results are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ranking {
    /// Plain BM25.
    V1,
    /// BM25 weighted by the product's rating: `score × (0.5 + rating / 5)`, so a 5-star
    /// product scores 1.5× and a 1-star product 0.7× of its text relevance.
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Rating,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub text: String,
    pub category: Option<String>,
    pub brand: Option<String>,
    /// Inclusive bounds in paise.
    pub min_price: Option<u32>,
    pub max_price: Option<u32>,
    pub sort: Sort,
    /// 1-based.
    pub page: usize,
    pub page_size: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: u32,
    pub title: String,
    pub brand: String,
    pub category: String,
    /// Paise.
    pub price: u32,
    /// Stars, one decimal.
    pub rating: f32,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Results {
    pub total: usize,
    pub page: usize,
    pub page_size: usize,
    pub ranking: Ranking,
    pub sort: Sort,
    /// Query terms answered by a near spelling: `{"fone": "phone"}` (the closest one).
    pub corrections: Vec<(String, String)>,
    pub unmatched: Vec<String>,
    pub results: Vec<Hit>,
}

struct TermGroup {
    /// (term index, weight) alternatives for one query word.
    alternatives: Vec<(usize, f32)>,
}

pub fn search(index: &Index<'_>, q: &Query, ranking: Ranking) -> Results {
    let words: Vec<String> = {
        let mut w = tokens(&q.text);
        w.dedup();
        w.truncate(MAX_TERMS);
        w
    };
    let mut groups = Vec::new();
    let mut corrections = Vec::new();
    let mut unmatched = Vec::new();
    for word in &words {
        if let Some(t) = index.find_term(word) {
            groups.push(TermGroup {
                alternatives: vec![(t, 1.0)],
            });
            continue;
        }
        let max_edits = match word.len() {
            0..=3 => 0,
            4..=7 => 1,
            _ => 2,
        };
        let mut alternatives = Vec::new();
        let mut best: Option<(usize, usize)> = None;
        if max_edits > 0 {
            for t in 0..index.term_count() {
                if let Some(d) = within_edits(word.as_bytes(), index.term_bytes(t), max_edits) {
                    alternatives.push((t, TYPO_WEIGHT[d]));
                    if best.is_none_or(|(_, bd)| d < bd) {
                        best = Some((t, d));
                    }
                }
            }
        }
        match best {
            Some((t, _)) => {
                corrections.push((word.clone(), index.term(t).to_string()));
                groups.push(TermGroup { alternatives });
            }
            None => unmatched.push(word.clone()),
        }
    }

    let n = index.doc_count();
    let category = q.category.as_deref().map(str::to_ascii_lowercase);
    let brand = q.brand.as_deref().map(str::to_ascii_lowercase);
    let passes = |doc: usize| {
        let d = index.fields(doc);
        category
            .as_deref()
            .is_none_or(|c| index.category(d.category).eq_ignore_ascii_case(c))
            && brand
                .as_deref()
                .is_none_or(|b| index.brand(d.brand).eq_ignore_ascii_case(b))
            && q.min_price.is_none_or(|m| d.price >= m)
            && q.max_price.is_none_or(|m| d.price <= m)
    };

    let mut hits: Vec<(u32, f32)> = Vec::new();
    if groups.is_empty() && !words.is_empty() {
        // Every word was unmatched: nothing can match all of them.
    } else if groups.is_empty() {
        // No searchable words: browse the filtered catalogue, best rated first.
        for doc in 0..n {
            if passes(doc) {
                hits.push((doc as u32, 0.0));
            }
        }
    } else {
        let mut scores = vec![0f32; n];
        let mut matched = vec![0u8; n];
        let all: u8 = if groups.len() == 8 {
            0xff
        } else {
            (1u8 << groups.len()) - 1
        };
        let avg = index.avg_len().max(1.0);
        for (g, group) in groups.iter().enumerate() {
            for &(t, weight) in &group.alternatives {
                let df = index.document_frequency(t) as f32;
                let idf = (1.0 + (n as f32 - df + 0.5) / (df + 0.5)).ln();
                for (doc, tf) in index.postings(t) {
                    let doc = doc as usize;
                    let dl = f32::from(index.fields(doc).len);
                    let tf = f32::from(tf);
                    let s = idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * dl / avg));
                    scores[doc] += weight * s;
                    matched[doc] |= 1 << g;
                }
            }
        }
        for doc in 0..n {
            if matched[doc] == all && passes(doc) {
                let mut s = scores[doc];
                if ranking == Ranking::V2 {
                    s *= 0.5 + f32::from(index.fields(doc).rating) / 50.0;
                }
                hits.push((doc as u32, s));
            }
        }
    }

    let doc = |id: u32| index.fields(id as usize);
    match q.sort {
        Sort::Relevance if !groups.is_empty() => {
            hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)))
        }
        Sort::Relevance | Sort::Rating => hits.sort_by(|a, b| {
            doc(b.0)
                .rating
                .cmp(&doc(a.0).rating)
                .then(b.1.total_cmp(&a.1))
                .then(a.0.cmp(&b.0))
        }),
        Sort::PriceAsc => {
            hits.sort_by(|a, b| doc(a.0).price.cmp(&doc(b.0).price).then(a.0.cmp(&b.0)))
        }
        Sort::PriceDesc => {
            hits.sort_by(|a, b| doc(b.0).price.cmp(&doc(a.0).price).then(a.0.cmp(&b.0)))
        }
    }

    let total = hits.len();
    let start = (q.page - 1).saturating_mul(q.page_size).min(total);
    let end = (start + q.page_size).min(total);
    let results = hits[start..end]
        .iter()
        .map(|&(id, score)| {
            let d = index.doc(id as usize);
            Hit {
                id,
                title: d.title.to_string(),
                brand: index.brand(d.brand).to_string(),
                category: index.category(d.category).to_string(),
                price: d.price,
                rating: f32::from(d.rating) / 10.0,
                score: (score * 1000.0).round() / 1000.0,
            }
        })
        .collect();
    Results {
        total,
        page: q.page,
        page_size: q.page_size,
        ranking,
        sort: q.sort,
        corrections,
        unmatched,
        results,
    }
}
