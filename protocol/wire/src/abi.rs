//! The host's side of the processor ABI (`docs/processor-abi.md`) that does not depend on the
//! WebAssembly engine: the exports and their types, the result slot, the checks on what
//! `silt_alloc` returns and the operator's message of an error status. The broker's host
//! (`silt-runtime`, wasmtime) and the device's (`silt-device-runtime`, wasmi) both use it, so
//! the tiers agree on every rule and every message.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The ABI version hosts speak, returned by `silt_abi_version`.
pub const ABI_VERSION: i32 = 1;
/// Alignment `silt_alloc` promises.
pub const ALLOC_ALIGN: u32 = 8;
/// The result slot: `ptr` and `len`, two little-endian u32s.
pub const RESULT_SLOT_LEN: usize = 8;
/// Most bytes of a guest's error message shown to the operator.
pub const GUEST_MESSAGE_BYTES_MAX: usize = 4096;

/// One ABI export: its name, its number of i32 parameters (each returns one i32), and whether
/// a module must have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiFunc {
    pub name: &'static str,
    pub params: usize,
    pub required: bool,
}

/// Every function export the ABI names, in this order (see the indexes below).
pub const ABI_FUNCS: [AbiFunc; 7] = [
    AbiFunc { name: "silt_abi_version", params: 0, required: true },
    AbiFunc { name: "silt_alloc", params: 1, required: true },
    AbiFunc { name: "silt_init", params: 3, required: true },
    AbiFunc { name: "silt_process", params: 3, required: true },
    AbiFunc { name: "silt_snapshot", params: 1, required: false },
    AbiFunc { name: "silt_restore", params: 3, required: false },
    AbiFunc { name: "silt_counters", params: 1, required: false },
];
/// Index of `silt_snapshot` in [`ABI_FUNCS`].
pub const SNAPSHOT: usize = 4;
/// Index of `silt_restore` in [`ABI_FUNCS`].
pub const RESTORE: usize = 5;

/// What is wrong with `wasm` as a core module of version 1, if anything (checked before an
/// engine sees it, so that a component or another version gets a clear message).
pub fn core_wasm_problem(wasm: &[u8]) -> Option<&'static str> {
    if wasm.len() < 8 || wasm[..4] != *b"\0asm" {
        return Some("expected \\0asm magic");
    }
    if wasm[4..8] != [1, 0, 0, 0] {
        return Some("not a core module of version 1; components and other versions are not processors");
    }
    None
}

/// An export as an engine describes it, value types named as in the text format (`i32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    Memory,
    Func {
        params: Vec<&'static str>,
        results: Vec<&'static str>,
    },
    /// A table or a global.
    Other,
}

/// Why a module's exports break the ABI: the export and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportProblem {
    pub name: &'static str,
    pub reason: String,
}

/// Checks a module's exports against the ABI: the memory, every function in [`ABI_FUNCS`]
/// with its exact type, and `silt_snapshot` and `silt_restore` both or neither. `export`
/// describes the export of a name, `None` when there is none. Returns whether the module is
/// stateful.
pub fn check_exports(mut export: impl FnMut(&str) -> Option<Shape>) -> Result<bool, ExportProblem> {
    let problem = |name: &'static str, reason: String| Err(ExportProblem { name, reason });
    match export("memory") {
        Some(Shape::Memory) => {}
        Some(_) => return problem("memory", "is not a memory".into()),
        None => return problem("memory", "is missing".into()),
    }
    let mut present = [false; ABI_FUNCS.len()];
    for (i, func) in ABI_FUNCS.iter().enumerate() {
        let reason = match export(func.name) {
            None if func.required => "is missing".to_string(),
            None => continue,
            Some(Shape::Func { params, results }) => {
                if params.len() == func.params && params.iter().all(|t| *t == "i32") && results == ["i32"] {
                    present[i] = true;
                    continue;
                }
                format!(
                    "has type (func (param {}) (result {})) but the ABI requires {}",
                    params.join(" "),
                    results.join(" "),
                    signature(func.params)
                )
            }
            Some(_) => format!("is not a function; the ABI requires {}", signature(func.params)),
        };
        return problem(func.name, reason);
    }
    let (snapshot, restore) = (present[SNAPSHOT], present[RESTORE]);
    if snapshot != restore {
        let (has, lacks) =
            if snapshot { ("silt_snapshot", "silt_restore") } else { ("silt_restore", "silt_snapshot") };
        return problem(lacks, format!("is missing while {has} is exported; a stateful module exports both"));
    }
    Ok(snapshot)
}

/// The ABI's type of a function of `params` i32s, in the text format.
pub fn signature(params: usize) -> String {
    if params == 0 {
        return "(func (result i32))".into();
    }
    let params: Vec<&str> = (0..params).map(|_| "i32").collect();
    format!("(func (param {}) (result i32))", params.join(" "))
}

/// The in-bounds guest bytes `ptr..ptr + len`, if they are.
pub fn guest_range(memory: &[u8], ptr: u32, len: usize) -> Option<&[u8]> {
    let start = ptr as usize;
    let end = start.checked_add(len)?;
    memory.get(start..end)
}

/// The result slot at `result_ptr`: `(ptr, len)`; `None` when the slot is outside memory
/// (which a host that checked the slot's allocation never sees: memory never shrinks).
pub fn read_slot(memory: &[u8], result_ptr: u32) -> Option<(u32, usize)> {
    let slot = guest_range(memory, result_ptr, RESULT_SLOT_LEN)?;
    let ptr = u32::from_le_bytes([slot[0], slot[1], slot[2], slot[3]]);
    let len = u32::from_le_bytes([slot[4], slot[5], slot[6], slot[7]]);
    Some((ptr, len as usize))
}

/// What is wrong with the address `ptr` that `silt_alloc(size)` returned, if anything: 0, not
/// aligned to [`ALLOC_ALIGN`], or `size` bytes from it outside memory.
pub fn alloc_problem(memory: &[u8], ptr: u32, size: usize) -> Option<String> {
    if ptr == 0 {
        Some("returned 0: the module could not provide the memory".to_string())
    } else if !ptr.is_multiple_of(ALLOC_ALIGN) {
        Some(format!("returned {ptr}, which is not aligned to {ALLOC_ALIGN}"))
    } else if guest_range(memory, ptr, size).is_none() {
        Some(format!("returned {ptr}, but {size} bytes from there lie outside memory"))
    } else {
        None
    }
}

/// The operator's message of error `status` whose result slot names `(ptr, len)`: at most
/// its first [`GUEST_MESSAGE_BYTES_MAX`] bytes, invalid UTF-8 replaced, " [...]" when cut.
pub fn guest_message(memory: &[u8], status: i32, (ptr, len): (u32, usize)) -> String {
    let shown = len.min(GUEST_MESSAGE_BYTES_MAX);
    match guest_range(memory, ptr, shown) {
        _ if len == 0 => format!("error status {status} without a message"),
        Some(bytes) => {
            let mut m = String::from_utf8_lossy(bytes).into_owned();
            if len > shown {
                m.push_str(" [...]");
            }
            m
        }
        None => format!("error status {status}; its message slot names bytes outside memory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges, the slot, allocation checks and messages, at their edges.
    #[test]
    fn rules_at_the_edges() {
        let mut memory = [0u8; 64];
        assert_eq!(guest_range(&memory, 60, 4).map(<[u8]>::len), Some(4));
        assert_eq!(guest_range(&memory, 61, 4), None);
        assert_eq!(guest_range(&memory, u32::MAX, usize::MAX), None);
        memory[8..16].copy_from_slice(&[32, 0, 0, 0, 5, 0, 0, 0]);
        assert_eq!(read_slot(&memory, 8), Some((32, 5)));
        assert_eq!(read_slot(&memory, 60), None);
        assert_eq!(alloc_problem(&memory, 8, 56), None);
        assert!(alloc_problem(&memory, 0, 1).unwrap().contains("returned 0"));
        assert!(alloc_problem(&memory, 12, 1).unwrap().contains("not aligned to 8"));
        assert!(alloc_problem(&memory, 8, 57).unwrap().contains("outside memory"));
        memory[32..37].copy_from_slice(b"oops\xff");
        assert_eq!(guest_message(&memory, 1, (32, 4)), "oops");
        assert_eq!(guest_message(&memory, 1, (32, 5)), "oops\u{fffd}");
        assert_eq!(guest_message(&memory, 2, (32, 0)), "error status 2 without a message");
        assert!(guest_message(&memory, 3, (60, 8)).contains("outside memory"));
    }

    /// Export checks name the export and the type it should have.
    #[test]
    fn exports() {
        let i32s = |n: usize| Shape::Func { params: alloc::vec!["i32"; n], results: alloc::vec!["i32"] };
        let good = |name: &str| match name {
            "memory" => Some(Shape::Memory),
            _ => ABI_FUNCS.iter().find(|f| f.name == name).map(|f| i32s(f.params)),
        };
        assert_eq!(check_exports(good), Ok(true));
        let stateless =
            |name: &str| if name == "silt_snapshot" || name == "silt_restore" { None } else { good(name) };
        assert_eq!(check_exports(stateless), Ok(false));
        let half = |name: &str| if name == "silt_restore" { None } else { good(name) };
        assert_eq!(check_exports(half).unwrap_err().name, "silt_restore");
        let typo = |name: &str| if name == "silt_init" { Some(i32s(2)) } else { good(name) };
        let e = check_exports(typo).unwrap_err();
        assert_eq!(e.reason, "has type (func (param i32 i32) (result i32)) but the ABI requires (func (param i32 i32 i32) (result i32))");
        assert_eq!(core_wasm_problem(b"\0asm\x01\0\0\0"), None);
        assert!(core_wasm_problem(b"\0asm\x0d\0\x01\0").unwrap().contains("version 1"));
        assert!(core_wasm_problem(b"nope").unwrap().contains("magic"));
    }
}
