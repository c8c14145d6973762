//! Injected I/O errors, for tests of what the broker does when its disk fails. Debug builds
//! only: `SILT_FAILPOINTS=flush@3` makes the third call of [`crate::Store::flush`] and every
//! later one fail with `EIO`, as a dying disk's would (several points: `a@N,b@M`). In a
//! release build [`check`] is empty and the variable is never read.

use crate::StorageError;

/// `Err(EIO)` when the failpoint `point` is set and has been reached.
#[cfg(debug_assertions)]
pub(crate) fn check(point: &str) -> Result<(), StorageError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    static POINTS: OnceLock<HashMap<String, u64>> = OnceLock::new();
    static CALLS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let points = POINTS.get_or_init(|| parse(&std::env::var("SILT_FAILPOINTS").unwrap_or_default()));
    let Some(&from) = points.get(point) else {
        return Ok(());
    };
    let mut calls = CALLS.lock().unwrap_or_else(|p| p.into_inner());
    let n = calls.get_or_insert_with(HashMap::new).entry(point.to_string()).or_insert(0);
    *n += 1;
    if *n >= from {
        return Err(StorageError::Sled(sled::Error::Io(std::io::Error::from_raw_os_error(libc::EIO))));
    }
    Ok(())
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn check(_point: &str) -> Result<(), StorageError> {
    Ok(())
}

/// `name@N` pairs separated by commas; malformed ones are ignored (a test sees it at once).
#[cfg(debug_assertions)]
fn parse(spec: &str) -> std::collections::HashMap<String, u64> {
    spec.split(',')
        .filter_map(|p| {
            let (name, n) = p.trim().split_once('@')?;
            Some((name.to_string(), n.parse().ok().filter(|&n| n > 0)?))
        })
        .collect()
}

#[cfg(all(test, debug_assertions))]
mod tests {
    #[test]
    fn specs_parse() {
        let p = super::parse("flush@3, ledger@1,bad,zero@0,x@y");
        assert_eq!(p.len(), 2);
        assert_eq!(p["flush"], 3);
        assert_eq!(p["ledger"], 1);
    }
}
