//! Builds the product catalogue's inverted index at compile time, so a fresh instance per
//! request finds it ready in its data segment.

use std::collections::BTreeMap;

#[path = "src/catalogue.rs"]
mod catalogue;
#[path = "src/format.rs"]
mod format;
#[path = "src/text.rs"]
#[allow(dead_code, reason = "the builder needs only the tokenizer")]
mod text;

fn main() {
    println!("cargo::rerun-if-changed=src/catalogue.rs");
    println!("cargo::rerun-if-changed=src/format.rs");
    println!("cargo::rerun-if-changed=src/text.rs");
    let products = catalogue::generate();
    let mut brands: Vec<&str> = products.iter().map(|p| p.brand).collect();
    brands.sort_unstable();
    brands.dedup();
    let mut categories: Vec<&str> = products.iter().map(|p| p.category).collect();
    categories.sort_unstable();
    categories.dedup();

    let mut postings: BTreeMap<String, BTreeMap<u32, u8>> = BTreeMap::new();
    let mut docs = Vec::with_capacity(products.len());
    for (i, p) in products.iter().enumerate() {
        // Title, brand and category are all searchable: "samsung phone" or "shoes".
        let terms = text::tokens(&format!("{} {} {}", p.title, p.brand, p.category));
        for t in &terms {
            let tf = postings
                .entry(t.clone())
                .or_default()
                .entry(i as u32)
                .or_insert(0);
            *tf = tf.saturating_add(1);
        }
        docs.push(format::DocIn {
            title: &p.title,
            brand: brands.binary_search(&p.brand).unwrap() as u16,
            category: categories.binary_search(&p.category).unwrap() as u16,
            rating: p.rating,
            len: terms.len().min(255) as u8,
            price: p.price,
        });
    }
    let terms: Vec<(String, Vec<(u32, u8)>)> = postings
        .into_iter()
        .map(|(t, docs)| (t, docs.into_iter().collect()))
        .collect();
    let bytes = format::write(&docs, &terms, &brands, &categories);
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("index.bin");
    std::fs::write(out, bytes).unwrap();
}
