//! `append_checkpointed`: output batches and a processor checkpoint commit together or not at all.

use crate::{batch, open, topic};

/// Batches and checkpoint are both there after a reopen; an empty append still moves the
/// checkpoint; a refused batch writes neither.
#[test]
fn output_and_checkpoint_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.create_topic(topic("out", 2)).unwrap();
        let p = store.partition("out", 1).unwrap();
        let mut a = batch(0, 0, &[(1, b"a"), (2, b"b")]);
        let mut b = batch(0, 0, &[(3, b"c")]);
        let offsets = p.append_checkpointed(&mut [&mut a, &mut b], 9, "proc", 1, b"cp-1").unwrap();
        assert_eq!(offsets, vec![0, 2]);
        assert_eq!(store.checkpoint("out", "proc", 1).unwrap().as_deref(), Some(&b"cp-1"[..]));
        assert_eq!(store.checkpoint("out", "proc", 0).unwrap(), None);

        // Nothing to output: only the checkpoint moves.
        assert_eq!(p.append_checkpointed(&mut [], 9, "proc", 1, b"cp-2").unwrap(), Vec::<u64>::new());
        assert_eq!(p.high_watermark(), 3);

        // A batch the partition refuses (idempotent duplicate) fails the whole call.
        let mut dup = batch(5, 0, &[(4, b"d")]);
        p.append(&mut dup.clone(), 9).unwrap();
        let mut ok = batch(0, 0, &[(5, b"e")]);
        assert!(p.append_checkpointed(&mut [&mut ok, &mut dup], 9, "proc", 1, b"cp-3").is_err());
        assert_eq!(store.checkpoint("out", "proc", 1).unwrap().as_deref(), Some(&b"cp-2"[..]));
        assert_eq!(p.high_watermark(), 4);
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.checkpoint("out", "proc", 1).unwrap().as_deref(), Some(&b"cp-2"[..]));
    assert_eq!(store.partition("out", 1).unwrap().high_watermark(), 4);
    store.delete_processor("proc", Some("out")).unwrap();
    assert_eq!(store.checkpoint("out", "proc", 1).unwrap(), None);
}
