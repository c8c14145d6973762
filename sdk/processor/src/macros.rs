//! The export macros. Each crate exports one processor: the ABI's export names are fixed.

/// Exports a [`Processor`](crate::Processor) as the module's ABI functions.
///
/// `export!(T)` exports a stateless processor (`silt_abi_version`, `silt_alloc`, `silt_init`,
/// `silt_process`, `silt_counters`); `export!(T, stateful)` also exports `silt_snapshot` and `silt_restore`
/// and needs `T: Stateful`. The functions exist on wasm32 only; on other targets the macro
/// only checks the trait bounds, and [`testing::Harness`](crate::testing::Harness) runs `T`.
#[macro_export]
macro_rules! export {
    ($processor:ty) => {
        $crate::__export!($processor;);
    };
    ($processor:ty, stateful) => {
        $crate::__export!($processor; stateful);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($processor:ty; $($stateful:ident)?) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn check<P: $crate::Processor>() {}
            let _ = check::<$processor>;
            $( $crate::__export_stateful!($stateful; $processor); )?
        };

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static GUEST: $crate::__private::GuestCell<$processor> = $crate::__private::GuestCell::new();

            #[unsafe(no_mangle)]
            extern "C" fn silt_abi_version() -> i32 {
                $crate::ABI_VERSION
            }

            #[unsafe(no_mangle)]
            extern "C" fn silt_alloc(size: i32) -> i32 {
                $crate::__private::alloc(size)
            }

            #[unsafe(no_mangle)]
            extern "C" fn silt_init(params_ptr: i32, params_len: i32, result_ptr: i32) -> i32 {
                // SAFETY: the host calls exports one at a time with the ABI's arguments.
                unsafe { $crate::__private::init(&GUEST, params_ptr, params_len, result_ptr) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn silt_process(batch_ptr: i32, batch_len: i32, result_ptr: i32) -> i32 {
                // SAFETY: as above.
                unsafe { $crate::__private::process(&GUEST, batch_ptr, batch_len, result_ptr) }
            }

            #[unsafe(no_mangle)]
            extern "C" fn silt_counters(result_ptr: i32) -> i32 {
                // SAFETY: as above.
                unsafe { $crate::__private::counters(&GUEST, result_ptr) }
            }

            $( $crate::__export_stateful!($stateful; $processor, GUEST); )?
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_stateful {
    (stateful; $processor:ty) => {
        fn check_stateful<P: $crate::Stateful>() {}
        let _ = check_stateful::<$processor>;
    };
    (stateful; $processor:ty, $guest:ident) => {
        #[unsafe(no_mangle)]
        extern "C" fn silt_snapshot(result_ptr: i32) -> i32 {
            // SAFETY: the host calls exports one at a time with the ABI's arguments.
            unsafe { $crate::__private::snapshot(&$guest, result_ptr) }
        }

        #[unsafe(no_mangle)]
        extern "C" fn silt_restore(state_ptr: i32, state_len: i32, result_ptr: i32) -> i32 {
            // SAFETY: as above.
            unsafe { $crate::__private::restore(&$guest, state_ptr, state_len, result_ptr) }
        }
    };
}

/// A filter from one function: keeps the records for which it returns `true`, copied byte for
/// byte. Defines `pub struct Filter` (a [`Processor`](crate::Processor)) and exports it.
///
/// `filter!(keep)` takes `fn keep(record: &Record<'_>) -> bool` and refuses any parameter;
/// `filter!(keep, Config)` takes `fn keep(record: &Record<'_>, config: &Config) -> bool` where
/// `Config:` [`FromParams`](crate::FromParams) is built once, at `silt_init`.
///
/// ```
/// use silt_processor::{json, Record};
/// fn keep(record: &Record<'_>) -> bool {
///     json::number(record.value, "battery").is_some_and(|volts| volts < 3.3)
/// }
/// silt_processor::filter!(keep);
/// # let mut h = silt_processor::testing::Harness::<Filter>::new(&[]).unwrap();
/// # assert_eq!(h.process(&[(0, "d", r#"{"battery":3.1}"#)]).unwrap().len(), 1);
/// ```
#[macro_export]
macro_rules! filter {
    ($keep:path) => {
        $crate::filter!(|record, _config: &()| $keep(record), ());
    };
    ($keep:expr, $config:ty) => {
        /// The processor `silt_processor::filter!` built.
        pub struct Filter {
            config: $config,
        }

        impl $crate::Processor for Filter {
            fn init(params: &$crate::Params<'_>) -> ::core::result::Result<Self, $crate::Error> {
                ::core::result::Result::Ok(Filter {
                    config: <$config as $crate::FromParams>::from_params(params)?,
                })
            }

            fn process(
                &mut self,
                batch: &$crate::Batch<'_>,
                out: &mut $crate::Output,
            ) -> ::core::result::Result<(), $crate::Error> {
                let keep: fn(&$crate::Record<'_>, &$config) -> bool = $keep;
                for record in batch.records() {
                    if keep(&record, &self.config) {
                        out.pass(&record);
                    }
                }
                ::core::result::Result::Ok(())
            }
        }

        $crate::export!(Filter);
    };
}

/// A map from one function: every record is emitted with its time, key and headers and the
/// value the function writes. Defines `pub struct Map` and exports it.
///
/// `map!(f)` takes `fn f(record: &Record<'_>, value: &mut Vec<u8>) -> Result<(), Error>`;
/// `map!(f, Config)` takes `fn f(record: &Record<'_>, config: &Config, value: &mut Vec<u8>)
/// -> Result<(), Error>`. `value` is empty on each call (its allocation is reused).
#[macro_export]
macro_rules! map {
    ($f:path) => {
        $crate::map!(|record, _config: &(), value| $f(record, value), ());
    };
    ($f:expr, $config:ty) => {
        /// The processor `silt_processor::map!` built.
        pub struct Map {
            config: $config,
            value: $crate::__private::Vec<u8>,
        }

        impl $crate::Processor for Map {
            fn init(params: &$crate::Params<'_>) -> ::core::result::Result<Self, $crate::Error> {
                ::core::result::Result::Ok(Map {
                    config: <$config as $crate::FromParams>::from_params(params)?,
                    value: $crate::__private::Vec::new(),
                })
            }

            fn process(
                &mut self,
                batch: &$crate::Batch<'_>,
                out: &mut $crate::Output,
            ) -> ::core::result::Result<(), $crate::Error> {
                let f: fn(
                    &$crate::Record<'_>,
                    &$config,
                    &mut $crate::__private::Vec<u8>,
                ) -> ::core::result::Result<(), $crate::Error> = $f;
                for record in batch.records() {
                    self.value.clear();
                    f(&record, &self.config, &mut self.value)?;
                    out.pass_with_value(&record, &self.value);
                }
                ::core::result::Result::Ok(())
            }
        }

        $crate::export!(Map);
    };
}

/// A filter-map from one function: like [`map!`], but the function returns `Ok(false)` to
/// drop the record. Defines `pub struct FilterMap` and exports it.
///
/// `filter_map!(f)` takes `fn f(record: &Record<'_>, value: &mut Vec<u8>) -> Result<bool,
/// Error>`; `filter_map!(f, Config)` adds `config: &Config` after the record.
#[macro_export]
macro_rules! filter_map {
    ($f:path) => {
        $crate::filter_map!(|record, _config: &(), value| $f(record, value), ());
    };
    ($f:expr, $config:ty) => {
        /// The processor `silt_processor::filter_map!` built.
        pub struct FilterMap {
            config: $config,
            value: $crate::__private::Vec<u8>,
        }

        impl $crate::Processor for FilterMap {
            fn init(params: &$crate::Params<'_>) -> ::core::result::Result<Self, $crate::Error> {
                ::core::result::Result::Ok(FilterMap {
                    config: <$config as $crate::FromParams>::from_params(params)?,
                    value: $crate::__private::Vec::new(),
                })
            }

            fn process(
                &mut self,
                batch: &$crate::Batch<'_>,
                out: &mut $crate::Output,
            ) -> ::core::result::Result<(), $crate::Error> {
                let f: fn(
                    &$crate::Record<'_>,
                    &$config,
                    &mut $crate::__private::Vec<u8>,
                ) -> ::core::result::Result<bool, $crate::Error> = $f;
                for record in batch.records() {
                    self.value.clear();
                    if f(&record, &self.config, &mut self.value)? {
                        out.pass_with_value(&record, &self.value);
                    }
                }
                ::core::result::Result::Ok(())
            }
        }

        $crate::export!(FilterMap);
    };
}

/// A flat-map from one function: it may emit any number of records per input record.
/// Defines `pub struct FlatMap` and exports it.
///
/// `flat_map!(f)` takes `fn f(record: &Record<'_>, out: &mut Output) -> Result<(), Error>`;
/// `flat_map!(f, Config)` adds `config: &Config` after the record.
#[macro_export]
macro_rules! flat_map {
    ($f:path) => {
        $crate::flat_map!(|record, _config: &(), out| $f(record, out), ());
    };
    ($f:expr, $config:ty) => {
        /// The processor `silt_processor::flat_map!` built.
        pub struct FlatMap {
            config: $config,
        }

        impl $crate::Processor for FlatMap {
            fn init(params: &$crate::Params<'_>) -> ::core::result::Result<Self, $crate::Error> {
                ::core::result::Result::Ok(FlatMap {
                    config: <$config as $crate::FromParams>::from_params(params)?,
                })
            }

            fn process(
                &mut self,
                batch: &$crate::Batch<'_>,
                out: &mut $crate::Output,
            ) -> ::core::result::Result<(), $crate::Error> {
                let f: fn(
                    &$crate::Record<'_>,
                    &$config,
                    &mut $crate::Output,
                ) -> ::core::result::Result<(), $crate::Error> = $f;
                for record in batch.records() {
                    f(&record, &self.config, out)?;
                }
                ::core::result::Result::Ok(())
            }
        }

        $crate::export!(FlatMap);
    };
}
