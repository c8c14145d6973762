//! Loading a module: validation with the ABI's proposals, no imports, the ABI's exports.

use alloc::string::ToString;

use wasmi::{CompilationMode, Config, Engine, ExternType, ValType};
use wasmparser::{Validator, WasmFeatures};

use crate::instance::{self, Instance};
use crate::{Error, Limits};
use silt_wire::abi;

/// Deepest call stack of wasm functions: wasmi's default. A Rust guest keeps its own stack in
/// linear memory; this bounds only the frames wasmi keeps for it.
const CALL_DEPTH_MAX: usize = 1000;
/// Most bytes of wasmi's value stack (locals and operands of the live frames), which lives on
/// the host heap. A quarter of wasmi's 1 MB default: the example processors, JSON parsing
/// included, run within it, and a runaway recursion stops with "call stack exhausted" before
/// it takes a device's heap.
const VALUE_STACK_BYTES_MAX: usize = 256 * 1024;

/// A processor module, validated and checked against the ABI, compiled to wasmi's bytecode.
/// Each module has its own wasmi engine, so dropping the module and its instances frees
/// everything it compiled.
pub struct Module {
    engine: Engine,
    module: wasmi::Module,
    stateful: bool,
}

/// The proposals a module may use on this tier: those of docs/processor-abi.md (WebAssembly
/// 1.0 with mutable globals, bulk memory, sign extension, multi-value, non-trapping
/// float-to-int and reference types) without SIMD.
///
/// Checked by wasmparser before wasmi sees the module, and not only through wasmi's `Config`:
/// wasmi accepts SIMD whenever its `simd` cargo feature is on, and cargo turns it on for every
/// user of wasmi in a build where any crate asks for it (in `cargo test --workspace`, the
/// SDK's test host). The set a module is checked against must not depend on the build.
fn abi_features() -> WasmFeatures {
    WasmFeatures::WASM1
        | WasmFeatures::BULK_MEMORY
        | WasmFeatures::SIGN_EXTENSION
        | WasmFeatures::MULTI_VALUE
        | WasmFeatures::SATURATING_FLOAT_TO_INT
        | WasmFeatures::REFERENCE_TYPES
}

/// The wasmi settings of the device tier.
fn engine_config() -> Config {
    let mut config = Config::default();
    config
        // The time limit: fuel per call, counted in instructions.
        .consume_fuel(true)
        // Compile every function before the first call, so that a call's fuel pays for its
        // instructions only, never for translating a function on first use: the same call
        // then stops at the same point whatever ran before it.
        .compilation_mode(CompilationMode::Eager)
        // A `silt.signature` section is checked before the module gets here; no custom
        // section changes what a module does, so none is kept.
        .ignore_custom_sections(true)
        // The proposals of `abi_features`, which were checked already; these settings keep
        // wasmi's own validation and translation to the same set. Reference types stay on
        // (the default): Rust encodes `call_indirect` with a table index, an overlong zero,
        // that wasmi accepts only with them.
        .wasm_multi_memory(false)
        .wasm_tail_call(false)
        .wasm_extended_const(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        .set_max_recursion_depth(CALL_DEPTH_MAX)
        .set_max_stack_height(VALUE_STACK_BYTES_MAX)
        // One instance at a time runs per engine.
        .set_max_cached_stacks(1);
    config
}

impl Module {
    /// Validates `wasm` with the ABI's proposals (without SIMD), refuses any import (naming it)
    /// and checks the ABI's exports and their types: `memory`, `silt_abi_version`, `silt_alloc`, `silt_init` and `silt_process`
    /// required; `silt_snapshot` and `silt_restore` both or neither; `silt_counters` optional.
    /// Other exports are ignored, and so are custom sections.
    pub fn new(wasm: &[u8]) -> Result<Module, Error> {
        check_core_wasm(wasm)?;
        Validator::new_with_features(abi_features())
            .validate_all(wasm)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let engine = Engine::new(&engine_config());
        let module = wasmi::Module::new(&engine, wasm).map_err(|e| Error::Invalid(e.to_string()))?;
        let stateful = check_abi(&module)?;
        Ok(Module { engine, module, stateful })
    }

    /// True when the module exports `silt_snapshot` and `silt_restore`.
    pub fn is_stateful(&self) -> bool {
        self.stateful
    }

    /// Instantiates the module under `limits`, checks `silt_abi_version() == 1`, allocates
    /// the result slot, passes `params` (sorted by key, ABI encoding) and calls `silt_init`.
    pub fn instantiate(&self, params: &[(&str, &str)], limits: &Limits) -> Result<Instance, Error> {
        instance::instantiate(&self.engine, &self.module, self.stateful, params, limits)
    }
}

fn check_core_wasm(wasm: &[u8]) -> Result<(), Error> {
    match abi::core_wasm_problem(wasm) {
        Some(problem) => Err(Error::NotWasm(problem)),
        None => Ok(()),
    }
}

fn shape(ty: ExternType) -> abi::Shape {
    let name = |t: &ValType| match t {
        ValType::I32 => "i32",
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        ValType::V128 => "v128",
        ValType::FuncRef => "funcref",
        ValType::ExternRef => "externref",
    };
    match ty {
        ExternType::Memory(_) => abi::Shape::Memory,
        ExternType::Func(f) => abi::Shape::Func {
            params: f.params().iter().map(name).collect(),
            results: f.results().iter().map(name).collect(),
        },
        _ => abi::Shape::Other,
    }
}

/// Checks imports and exports; returns whether the module is stateful.
fn check_abi(module: &wasmi::Module) -> Result<bool, Error> {
    if let Some(import) = module.imports().next() {
        return Err(Error::Import { module: import.module().into(), name: import.name().into() });
    }
    abi::check_exports(|name| module.get_export(name).map(shape))
        .map_err(|p| Error::Export { name: p.name, reason: p.reason })
}
