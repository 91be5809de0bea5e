//! The binary layout of the search index, written by `build.rs` and read in place by the
//! component. The index is part of the component's data segment, so every fresh
//! instance sees it through a copy-on-write mapping: nothing is parsed or built per
//! request.
//!
//! All integers are little-endian. Sections, in order:
//!
//! ```text
//! header    10 × u32: magic, version, docs, terms, postings, brands, categories,
//!                     strings length, average document length (f32 bits), reserved
//! docs      16 bytes each: title offset u32, title length u16, brand u16, category u16,
//!                          rating u8 (tenths of a star), length in terms u8, price u32 (paise)
//! terms     12 bytes each, sorted by text: text offset u32, text length u16, reserved u16,
//!                          first posting u32 (a term's postings end where the next term's begin)
//! postings  u32 each: document << 8 | term frequency
//! brands, categories   8 bytes each: text offset u32, text length u16, reserved u16
//! strings   UTF-8 text referred to by the offsets above
//! ```

#![allow(
    dead_code,
    reason = "build.rs uses the writer half, the component the reader half"
)]

pub const MAGIC: u32 = 0x5853_4244; // "DBSX"
pub const VERSION: u32 = 1;
const HEADER: usize = 10 * 4;
const DOC: usize = 16;
const TERM: usize = 12;
const NAME: usize = 8;

/// One document as the writer receives it.
pub struct DocIn<'a> {
    pub title: &'a str,
    pub brand: u16,
    pub category: u16,
    pub rating: u8,
    pub len: u8,
    pub price: u32,
}

/// Serializes an index. `terms` must be sorted by text; each posting list by document.
pub fn write(
    docs: &[DocIn<'_>],
    terms: &[(String, Vec<(u32, u8)>)],
    brands: &[&str],
    categories: &[&str],
) -> Vec<u8> {
    let mut strings = Vec::new();
    let mut put = |s: &str| {
        let off = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        (off, s.len() as u16)
    };
    let mut doc_bytes = Vec::with_capacity(docs.len() * DOC);
    let mut total_len = 0u64;
    for d in docs {
        let (off, len) = put(d.title);
        doc_bytes.extend_from_slice(&off.to_le_bytes());
        doc_bytes.extend_from_slice(&len.to_le_bytes());
        doc_bytes.extend_from_slice(&d.brand.to_le_bytes());
        doc_bytes.extend_from_slice(&d.category.to_le_bytes());
        doc_bytes.push(d.rating);
        doc_bytes.push(d.len);
        doc_bytes.extend_from_slice(&d.price.to_le_bytes());
        total_len += u64::from(d.len);
    }
    let mut term_bytes = Vec::with_capacity(terms.len() * TERM);
    let mut postings = Vec::new();
    for (text, list) in terms {
        let (off, len) = put(text);
        term_bytes.extend_from_slice(&off.to_le_bytes());
        term_bytes.extend_from_slice(&len.to_le_bytes());
        term_bytes.extend_from_slice(&0u16.to_le_bytes());
        term_bytes.extend_from_slice(&((postings.len() / 4) as u32).to_le_bytes());
        for (doc, tf) in list {
            postings.extend_from_slice(&((doc << 8) | u32::from(*tf)).to_le_bytes());
        }
    }
    let mut names = |list: &[&str]| {
        let mut out = Vec::new();
        for n in list {
            let (off, len) = put(n);
            out.extend_from_slice(&off.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
        }
        out
    };
    let brand_bytes = names(brands);
    let category_bytes = names(categories);
    let avg = if docs.is_empty() {
        0.0f32
    } else {
        total_len as f32 / docs.len() as f32
    };
    let header = [
        MAGIC,
        VERSION,
        docs.len() as u32,
        terms.len() as u32,
        (postings.len() / 4) as u32,
        brands.len() as u32,
        categories.len() as u32,
        strings.len() as u32,
        avg.to_bits(),
        0,
    ];
    let mut out = Vec::new();
    for h in header {
        out.extend_from_slice(&h.to_le_bytes());
    }
    for section in [
        doc_bytes,
        term_bytes,
        postings,
        brand_bytes,
        category_bytes,
        strings,
    ] {
        out.extend_from_slice(&section);
    }
    out
}

/// A read-only view of a serialized index.
#[derive(Clone, Copy)]
pub struct Index<'a> {
    bytes: &'a [u8],
    docs: usize,
    terms: usize,
    postings: usize,
    brands: usize,
    categories: usize,
    avg_len: f32,
    docs_at: usize,
    terms_at: usize,
    postings_at: usize,
    brands_at: usize,
    categories_at: usize,
    strings_at: usize,
}

/// One document's fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Doc<'a> {
    pub title: &'a str,
    pub brand: u16,
    pub category: u16,
    pub rating: u8,
    pub len: u8,
    pub price: u32,
}

/// A document's numbers (see [`Index::fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocFields {
    pub brand: u16,
    pub category: u16,
    pub rating: u8,
    pub len: u8,
    pub price: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Index<'a> {
    /// Opens an index, checking its header and that every section fits.
    pub fn open(bytes: &'a [u8]) -> Result<Index<'a>, String> {
        if bytes.len() < HEADER || u32_at(bytes, 0) != MAGIC || u32_at(bytes, 4) != VERSION {
            return Err("not a search index of this version".into());
        }
        let h = |i: usize| u32_at(bytes, i * 4) as usize;
        let (docs, terms, postings, brands, categories, strings) =
            (h(2), h(3), h(4), h(5), h(6), h(7));
        let docs_at = HEADER;
        let terms_at = docs_at + docs * DOC;
        let postings_at = terms_at + terms * TERM;
        let brands_at = postings_at + postings * 4;
        let categories_at = brands_at + brands * NAME;
        let strings_at = categories_at + categories * NAME;
        if strings_at + strings != bytes.len() {
            return Err("search index sections do not add up to its size".into());
        }
        Ok(Index {
            bytes,
            docs,
            terms,
            postings,
            brands,
            categories,
            avg_len: f32::from_bits(h(8) as u32),
            docs_at,
            terms_at,
            postings_at,
            brands_at,
            categories_at,
            strings_at,
        })
    }

    pub fn doc_count(&self) -> usize {
        self.docs
    }
    pub fn term_count(&self) -> usize {
        self.terms
    }
    pub fn avg_len(&self) -> f32 {
        self.avg_len
    }

    fn raw(&self, off: u32, len: u16) -> &'a [u8] {
        let start = self.strings_at + off as usize;
        &self.bytes[start..start + len as usize]
    }

    fn text(&self, off: u32, len: u16) -> &'a str {
        std::str::from_utf8(self.raw(off, len)).unwrap_or("")
    }

    /// Document `i` with its title (checked as UTF-8: read it only for results).
    pub fn doc(&self, i: usize) -> Doc<'a> {
        let at = self.docs_at + i * DOC;
        let f = self.fields(i);
        Doc {
            title: self.text(u32_at(self.bytes, at), u16_at(self.bytes, at + 4)),
            brand: f.brand,
            category: f.category,
            rating: f.rating,
            len: f.len,
            price: f.price,
        }
    }

    /// Document `i`'s numbers without its title: what scoring and filters read for
    /// every posting, so they skip the title's UTF-8 check (a tenth of a search's time
    /// in a Wasm profile).
    pub fn fields(&self, i: usize) -> DocFields {
        let at = self.docs_at + i * DOC;
        let b = self.bytes;
        DocFields {
            brand: u16_at(b, at + 6),
            category: u16_at(b, at + 8),
            rating: b[at + 10],
            len: b[at + 11],
            price: u32_at(b, at + 12),
        }
    }

    pub fn term(&self, i: usize) -> &'a str {
        let at = self.terms_at + i * TERM;
        self.text(u32_at(self.bytes, at), u16_at(self.bytes, at + 4))
    }

    /// Term `i`'s bytes, unchecked: the typo scan compares bytes with every term.
    pub fn term_bytes(&self, i: usize) -> &'a [u8] {
        let at = self.terms_at + i * TERM;
        self.raw(u32_at(self.bytes, at), u16_at(self.bytes, at + 4))
    }

    /// The index of `text` among the terms, by binary search.
    pub fn find_term(&self, text: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.terms);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.term(mid).cmp(text) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The (document, term frequency) pairs of term `i`.
    pub fn postings(&self, i: usize) -> impl Iterator<Item = (u32, u8)> + 'a {
        let first = u32_at(self.bytes, self.terms_at + i * TERM + 8) as usize;
        let end = if i + 1 < self.terms {
            u32_at(self.bytes, self.terms_at + (i + 1) * TERM + 8) as usize
        } else {
            self.postings
        };
        let bytes = self.bytes;
        let at = self.postings_at;
        (first..end).map(move |p| {
            let v = u32_at(bytes, at + p * 4);
            (v >> 8, (v & 0xff) as u8)
        })
    }

    pub fn document_frequency(&self, i: usize) -> usize {
        let first = u32_at(self.bytes, self.terms_at + i * TERM + 8) as usize;
        let end = if i + 1 < self.terms {
            u32_at(self.bytes, self.terms_at + (i + 1) * TERM + 8) as usize
        } else {
            self.postings
        };
        end - first
    }

    pub fn brand(&self, i: u16) -> &'a str {
        let at = self.brands_at + i as usize * NAME;
        self.text(u32_at(self.bytes, at), u16_at(self.bytes, at + 4))
    }
    pub fn brand_count(&self) -> usize {
        self.brands
    }
    pub fn category(&self, i: u16) -> &'a str {
        let at = self.categories_at + i as usize * NAME;
        self.text(u32_at(self.bytes, at), u16_at(self.bytes, at + 4))
    }
    pub fn category_count(&self) -> usize {
        self.categories
    }
}
