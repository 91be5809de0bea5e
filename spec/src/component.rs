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
    let b = bytes;
    if b.is_empty() {
        return Err(HeaderError::Empty);
    }
    let head_len = b.len().min(4);
    if b[..head_len] != WASM_MAGIC[..head_len] {
        return Err(HeaderError::NotWasm {
            head: hex(&b[..b.len().min(8)]),
        });
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
    check_sections(&b[8..]).map_err(|detail| HeaderError::Truncated { detail })
}

/// Walks the top-level sections (an id byte, a LEB128 size, the contents) and reports a
/// section that runs past the end of the file: the sure sign of a truncated download.
fn check_sections(mut rest: &[u8]) -> Result<(), String> {
    let mut offset = 8usize;
    while !rest.is_empty() {
        let id = rest[0];
        let mut size: u64 = 0;
        let mut shift = 0;
        let mut i = 1;
        loop {
            let Some(&byte) = rest.get(i) else {
                return Err(format!(
                    "section {id} at byte {offset} has an incomplete size"
                ));
            };
            size |= u64::from(byte & 0x7f) << shift;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(format!(
                    "section {id} at byte {offset} has a malformed size"
                ));
            }
        }
        let available = (rest.len() - i) as u64;
        if size > available {
            return Err(format!(
                "section {id} at byte {offset} declares {size} bytes but only {available} remain"
            ));
        }
        let end = i + size as usize;
        rest = &rest[end..];
        offset += end;
    }
    Ok(())
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
}
