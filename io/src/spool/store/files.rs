//! Checks of the spool's files before LMDB maps them.

use std::path::Path;

use crate::spool::SpoolError;

/// Refuses a `data.mdb` shorter than its newest meta page says. LMDB maps
/// the file and trusts it: a read of a page past the end of a truncated
/// file is a SIGBUS, not an error. An empty file where a spool was is
/// refused too (LMDB would start a new, empty spool over it). A missing
/// file is a new spool; a file LMDB does not recognise is left to LMDB,
/// which reports `MDB_INVALID`.
pub(super) fn check_not_truncated(dir: &Path) -> Result<(), SpoolError> {
    let path = dir.join("data.mdb");
    let io = |e| SpoolError::Io { dir: dir.to_path_buf(), source: e };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    let size = file.metadata().map_err(io)?.len();
    // The two meta pages, at most 64 KiB each.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, 2 * 65536), &mut bytes).map_err(io)?;
    let truncated = |needed| Err(SpoolError::Truncated { dir: dir.to_path_buf(), size, needed });
    if bytes.is_empty() {
        return truncated(2 * 4096);
    }
    // A meta page: 16 bytes of page header, then MDB_meta (64-bit LMDB):
    // magic u32, version u32, address, map size, two MDB_db of 48 bytes
    // (the first one's u32 pad holds the page size), last page, txn id.
    let word = |at: usize| bytes.get(at..at + 8).map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
    let meta = |page: usize| -> Option<(u64, u64)> {
        let magic = u32::from_ne_bytes(bytes.get(page + 16..page + 20)?.try_into().ok()?);
        (magic == 0xBEEF_C0DE).then_some((word(page + 144)?, word(page + 136)?))
    };
    let Some(first) = meta(0) else { return Ok(()) };
    let page_size = u32::from_ne_bytes(bytes[40..44].try_into().expect("4 bytes")) as usize;
    if !(512..=65536).contains(&page_size) {
        return Ok(());
    }
    // The newer of the two meta pages (by txn id) names the last page.
    let (_, last_page) = meta(page_size).map_or(first, |second| first.max(second));
    let needed = (last_page + 1).saturating_mul(page_size as u64);
    if size < needed {
        return truncated(needed);
    }
    Ok(())
}
