//! The GPT reader behind the agent's A/B slots: a small valid disk image
//! (`create_image`) is made once; each input is XORed onto its primary GPT
//! (the first 34 sectors) and, past that, onto its backup (the last 33), so
//! an all-zero input is the valid image and mutations corrupt it from there.
//! The image is then opened as the agent opens a disk (`SlotDisk::open`).
//! Opening never panics, and found slots are two distinct partitions.

#![no_main]

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use node_agent::slots::{create_image, ImageLayout, Slot, SlotDisk};

/// Bytes of the primary GPT region: MBR, header and 32 sectors of entries.
const HEAD: usize = 34 * 512;
/// Bytes of the backup GPT region: 32 sectors of entries and the header.
const TAIL: usize = 33 * 512;

/// The image file and its pristine GPT regions.
struct Template {
    _dir: tempfile::TempDir,
    path: PathBuf,
    len: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("disk.img");
        create_image(&path, &ImageLayout::small()).expect("image");
        let file = std::fs::File::open(&path).expect("open image");
        let len = file.metadata().expect("image size").len();
        let mut head = vec![0; HEAD];
        let mut tail = vec![0; TAIL];
        file.read_exact_at(&mut head, 0).expect("read head");
        file.read_exact_at(&mut tail, len - TAIL as u64)
            .expect("read tail");
        Template {
            _dir: dir,
            path,
            len,
            head,
            tail,
        }
    })
}

/// `pristine` with `input` XORed onto its start.
fn corrupt(pristine: &[u8], input: &[u8]) -> Vec<u8> {
    let mut out = pristine.to_vec();
    for (o, i) in out.iter_mut().zip(input) {
        *o ^= i;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let t = template();
    let (head_in, tail_in) = data.split_at(data.len().min(HEAD));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&t.path)
        .expect("open image for writing");
    file.write_all_at(&corrupt(&t.head, head_in), 0)
        .expect("write head");
    file.write_all_at(&corrupt(&t.tail, tail_in), t.len - TAIL as u64)
        .expect("write tail");
    if let Ok(disk) = SlotDisk::open(&t.path) {
        let (a, b) = (disk.info(Slot::A), disk.info(Slot::B));
        assert_ne!(a.number, b.number, "USR-A and USR-B are one partition");
        let _ = (disk.attrs(Slot::A), disk.attrs(Slot::B));
    }
});
