//! The interrupt's removal of outputs ([`output::remove_unfinished`]) acts on this process's list
//! of outputs, so its test has a process of its own (this file holds one test): under `cargo
//! test`, whose tests share a process, it would remove other tests' files.

use std::io::Write;

use aigentflow_persistence::output::{self, Output};

/// While placed outputs are held, an interrupt removes a new file already renamed into place
/// (and the side files beside it) as it removes an unfinished one; never a file that replaced
/// another, nor a name that someone else's file took since; and once the command finished
/// (`release_placed`), nothing, and it says so. Without holding, a placed file is not listed.
#[test]
fn an_interrupt_removes_the_new_outputs_a_command_put_in_place_until_it_finished() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str| {
        let path = dir.path().join(name);
        let mut out = Output::open(&path, None).unwrap();
        out.write_all(b"done").unwrap();
        out.commit().unwrap();
        path
    };
    let partial = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".partial"))
            .collect()
    };
    std::fs::write(dir.path().join("replaced.csv"), b"old").unwrap();
    let unheld = write("before.csv");
    output::hold_placed();
    let placed = write("placed.csv");
    std::fs::write(dir.path().join("placed.csv-wal"), b"side").unwrap();
    let replaced = write("replaced.csv");
    let swapped = write("swapped.csv");
    // Moved away (not removed, whose inode the next file could take), then replaced.
    std::fs::rename(&swapped, dir.path().join("moved.csv")).unwrap();
    std::fs::write(&swapped, b"someone else's").unwrap();
    let mut half = Output::open(&dir.path().join("unfinished.csv"), None).unwrap();
    half.write_all(b"half").unwrap();
    half.flush().unwrap();
    assert_eq!(partial().len(), 1);
    let held = output::remove_unfinished();
    assert!(!held.command_finished());
    drop(held);
    assert!(!placed.exists() && !dir.path().join("placed.csv-wal").exists());
    assert_eq!(partial(), Vec::<String>::new());
    assert_eq!(std::fs::read(&replaced).unwrap(), b"done", "it replaced a file: kept");
    assert_eq!(std::fs::read(&swapped).unwrap(), b"someone else's", "not ours");
    assert!(unheld.exists(), "placed before holding: not listed");
    drop(half);

    let kept = write("kept.csv");
    output::release_placed();
    let after = write("after.csv");
    let held = output::remove_unfinished();
    assert!(held.command_finished());
    drop(held);
    assert!(kept.exists() && after.exists(), "the command had finished");
}
