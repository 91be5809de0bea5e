//! What a component's bytes must look like before anything else looks at them: the
//! WebAssembly magic, the component version/layer (not a core module's), and top-level
//! sections that fit in the file (a truncated upload or download shows here).
//!
//! [`check`] is the one such check. The CLI runs it before uploading, the controller
//! before storing, the host before compiling; each puts its own words around the
//! [`HeaderError`] (a path, "the body", a digest). Whether the component is *valid*, and
//! exports what it must, only the host's compiler can tell.

/// The first 4 bytes of every WebAssembly binary.
pub const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// The version/layer of a core module.
pub const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
/// The version/layer of a component.
pub const COMPONENT_VERSION: [u8; 4] = [0x0d, 0, 1, 0];

/// Why bytes are not (the whole of) a component. Displayed as the rest of a sentence
/// whose subject the caller gives: "app.wasm {error}".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("is empty: expected a WebAssembly component")]
    Empty,
    #[error(
        "is not WebAssembly: it starts with {head}, not the wasm magic bytes 00 61 73 6d (\"\\0asm\")"
    )]
    NotWasm { head: String },
    #[error(
        "is a core WebAssembly module, not a component. Build a component instead: \
         `cargo build --target wasm32-wasip2` emits one directly, or wrap a module with \
         `wasm-tools component new`"
    )]
    CoreModule,
    #[error(
        "has an unknown WebAssembly version/layer {version}: expected a component (0d 00 01 00)"
    )]
    UnknownVersion { version: String },
    #[error("ends early: the file is truncated or incomplete ({detail})")]
    Truncated { detail: String },
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks that `bytes` start like a component and that its top-level sections fit.
pub fn check(bytes: &[u8]) -> Result<(), HeaderError> {
    let mut checker = Checker::default();
    checker.feed(bytes)?;
    checker.finish()
}

/// [`check`] of bytes that arrive in pieces (an upload): `feed` each piece in order —
/// it fails as soon as the header is wrong — then `finish`. It holds no more than the
/// 8-byte header, whatever the size of the component.
#[derive(Debug, Default)]
pub struct Checker {
    /// The first 8 bytes, as far as they have come.
    head: Vec<u8>,
    /// Bytes fed so far.
    offset: u64,
    /// A section whose id has come but not all of its size.
    sizing: Option<Section>,
    /// The section whose contents are being skipped, and how many bytes of them remain.
    within: Option<(Section, u64)>,
}

/// A top-level section: its id, where it starts, and its size as far as read (LEB128).
#[derive(Debug, Clone, Copy)]
struct Section {
    id: u8,
    at: u64,
    size: u64,
    shift: u32,
}

impl Checker {
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), HeaderError> {
        if self.head.len() < 8 {
            let take = (8 - self.head.len()).min(piece.len());
            self.head.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            self.offset += take as u64;
            if self.head.len() == 8 {
                self.check_head()?;
            }
        }
        while !piece.is_empty() {
            if let Some((_, left)) = &mut self.within {
                let n = (*left).min(piece.len() as u64);
                *left -= n;
                piece = &piece[n as usize..];
                self.offset += n;
                if *left == 0 {
                    self.within = None;
                }
                continue;
            }
            let byte = piece[0];
            piece = &piece[1..];
            let at = self.offset;
            self.offset += 1;
            let Some(s) = &mut self.sizing else {
                self.sizing = Some(Section {
                    id: byte,
                    at,
                    size: 0,
                    shift: 0,
                });
                continue;
            };
            s.size |= u64::from(byte & 0x7f) << s.shift;
            if byte & 0x80 == 0 {
                let section = *s;
                self.sizing = None;
                if section.size > 0 {
                    self.within = Some((section, section.size));
                }
                continue;
            }
            s.shift += 7;
            if s.shift > 28 {
                return Err(HeaderError::Truncated {
                    detail: format!("section {} at byte {} has a malformed size", s.id, s.at),
                });
            }
        }
        Ok(())
    }

    /// The verdict once every piece is fed.
    pub fn finish(self) -> Result<(), HeaderError> {
        if self.head.is_empty() {
            return Err(HeaderError::Empty);
        }
        self.check_head()?;
        if let Some(s) = self.sizing {
            return Err(HeaderError::Truncated {
                detail: format!("section {} at byte {} has an incomplete size", s.id, s.at),
            });
        }
        if let Some((s, left)) = self.within {
            return Err(HeaderError::Truncated {
                detail: format!(
                    "section {} at byte {} declares {} bytes but only {} remain",
                    s.id,
                    s.at,
                    s.size,
                    s.size - left
                ),
            });
        }
        Ok(())
    }

    fn check_head(&self) -> Result<(), HeaderError> {
        let b = &self.head;
        let head_len = b.len().min(4);
        if b[..head_len] != WASM_MAGIC[..head_len] {
            return Err(HeaderError::NotWasm { head: hex(b) });
        }
        if b.len() < 8 {
            return Err(HeaderError::Truncated {
                detail: format!("only {} bytes, shorter than the 8-byte header", b.len()),
            });
        }
        let version: [u8; 4] = b[4..8].try_into().expect("4 bytes");
        if version == CORE_VERSION {
            return Err(HeaderError::CoreModule);
        }
        if version != COMPONENT_VERSION {
            return Err(HeaderError::UnknownVersion {
                version: hex(&version),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(component (core module))`, as `wat` writes it: the header, then one core
    /// module section (id 1) holding an empty module.
    const NESTED: &[u8] = &[
        0, b'a', b's', b'm', 0x0d, 0, 1, 0, // component header
        1, 8, // section 1, 8 bytes
        0, b'a', b's', b'm', 1, 0, 0, 0, // an empty core module
    ];

    #[test]
    fn headers_are_classified() {
        assert_eq!(check(b""), Err(HeaderError::Empty));
        assert!(
            matches!(check(b"hello world"), Err(HeaderError::NotWasm { head }) if head == "68 65 6c 6c 6f 20 77 6f")
        );
        assert!(matches!(check(b"\0as"), Err(HeaderError::Truncated { .. })));
        assert!(matches!(
            check(b"\0asm\x01\0"),
            Err(HeaderError::Truncated { .. })
        ));
        let err = check(b"\0asm\x01\0\0\0").unwrap_err();
        assert_eq!(err, HeaderError::CoreModule);
        assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
        assert!(
            matches!(check(b"\0asm\x02\0\0\0"), Err(HeaderError::UnknownVersion { version }) if version == "02 00 00 00")
        );
        assert_eq!(check(&NESTED[..8]), Ok(()));
        assert_eq!(check(NESTED), Ok(()));
        let err = check(&NESTED[..NESTED.len() - 1]).unwrap_err();
        assert!(matches!(err, HeaderError::Truncated { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("declares 8 bytes but only 7 remain"),
            "{err}"
        );
        assert!(
            matches!(check(&NESTED[..9]), Err(HeaderError::Truncated { detail }) if detail.contains("incomplete size"))
        );
    }

    #[test]
    fn bytes_checked_in_pieces_get_the_verdict_of_the_whole() {
        let mut inputs: Vec<Vec<u8>> = (0..=NESTED.len()).map(|n| NESTED[..n].to_vec()).collect();
        inputs.push(b"hello world".to_vec());
        inputs.push(b"\0asm\x01\0\0\0 a core module".to_vec());
        // A size whose LEB128 never ends.
        inputs.push([&NESTED[..8], &[1, 0x80, 0x80, 0x80, 0x80, 0x80][..]].concat());
        for bytes in &inputs {
            let whole = check(bytes);
            for cut in 0..=bytes.len() {
                let mut c = Checker::default();
                let verdict = c
                    .feed(&bytes[..cut])
                    .and_then(|()| c.feed(&bytes[cut..]))
                    .and_then(|()| c.finish());
                assert_eq!(verdict, whole, "{bytes:?} cut at {cut}");
            }
            let mut c = Checker::default();
            let one_by_one = bytes
                .iter()
                .try_for_each(|b| c.feed(std::slice::from_ref(b)))
                .and_then(|()| c.finish());
            assert_eq!(one_by_one, whole, "{bytes:?} byte by byte");
        }
        assert!(matches!(
            check(inputs.last().unwrap()),
            Err(HeaderError::Truncated { detail }) if detail.contains("malformed")
        ));
    }
}
