//! Reading a `torch.save` file — `pytorch_model.bin`, or a `.pt` file such as the 2.7B release's
//! `Zamba2_2p7b_direct_from_pytorch.pt` — without running it: the zip archive PyTorch ≥ 1.6
//! writes (`{prefix}/data.pkl`, `{prefix}/data/{key}` holding each storage's raw bytes,
//! `{prefix}/byteorder`), its pickle read by [`crate::pickle`], which executes nothing.
//!
//! The file is memory-mapped like a safetensors shard: a tensor is a byte range of a storage
//! entry, which must be stored uncompressed (PyTorch never compresses). Every size the file
//! claims is checked before it is used: the zip's entry count, the pickle's length, each
//! storage's byte length against its element count, each tensor's extent against its storage.
//! Only row-major (contiguous) tensors are read, and two tensors may share a storage only as
//! the very same view (a tied weight); anything else is refused with one line naming the
//! tensor. A child module of `checkpoint`, so it builds the reader's own `Shard` and `Entry`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use zip::{CompressionMethod, ZipArchive};

use super::{format_err, io_err, CheckpointError, Entry, Shard};
use crate::pickle::{self, TensorRef, MAX_PICKLE_BYTES};

/// The name transformers and Zyphra's `save_pretrained` give a `torch.save` state dict.
pub const TORCH_FILE: &str = "pytorch_model.bin";
/// More zip entries than this is not a state dict (a 7B model has about a thousand tensors).
const MAX_ENTRIES: usize = 1 << 20;

/// The `torch.save` file of a checkpoint directory: `pytorch_model.bin`, else its only `*.pt`.
pub(super) fn find(dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    let bin = dir.join(TORCH_FILE);
    if bin.exists() {
        return Ok(Some(bin));
    }
    if dir.join("pytorch_model.bin.index.json").exists() {
        return Err(io_err(
            dir,
            "a sharded pytorch_model.bin (pytorch_model.bin.index.json) is not supported; \
             save it as one file or as safetensors",
        ));
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut pts: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pt") && p.is_file())
        .collect();
    pts.sort();
    match pts.len() {
        0 => Ok(None),
        1 => Ok(pts.pop()),
        _ => Err(io_err(
            dir,
            format!(
                "{} .pt files ({}); keep only the model's state dict",
                pts.len(),
                pts.iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Maps a `torch.save` file and returns its tensors (shard id 0).
pub(super) fn open(path: &Path) -> Result<(Shard, Vec<(String, Entry)>), CheckpointError> {
    let file = fs::File::open(path).map_err(|e| io_err(path, e))?;
    // SAFETY: as for safetensors shards (checkpoint::open_shard): read only, through ranges
    // checked against the map's length below; the file must not change while zamba2c runs.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| io_err(path, format!("mmap failed: {e}")))?;
    if map.first() == Some(&0x80) {
        return Err(format_err(
            path,
            "",
            "a legacy torch.save file (PyTorch < 1.6, not a zip archive); re-save it with a \
             current PyTorch",
        ));
    }
    let entries = read_entries(path, &map)?;
    Ok((
        Shard {
            path: path.to_path_buf(),
            map,
        },
        entries,
    ))
}

/// The tensors of the archive in `map`, as byte ranges of it.
fn read_entries(path: &Path, map: &[u8]) -> Result<Vec<(String, Entry)>, CheckpointError> {
    let bad = |field: &str, msg: String| format_err(path, field, msg);
    let mut zip = ZipArchive::new(Cursor::new(map))
        .map_err(|e| bad("", format!("not a torch.save zip archive: {e}")))?;
    if zip.len() > MAX_ENTRIES {
        return Err(bad(
            "",
            format!("{} zip entries; not a state dict", zip.len()),
        ));
    }
    let pickles: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(|n| n.to_string())
        .collect();
    let pkl = match pickles.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(bad(
                "",
                "no data.pkl in the archive: not a torch.save file".into(),
            ))
        }
        more => {
            return Err(bad(
                "",
                format!("{} data.pkl entries in the archive", more.len()),
            ))
        }
    };
    let prefix = &pkl[..pkl.len() - "data.pkl".len()];
    if let Some(i) = zip.index_for_name(&format!("{prefix}byteorder")) {
        let r = stored_range(&mut zip, i, map, path)?;
        if &map[r] != b"little" {
            return Err(bad(
                "byteorder",
                "the storages are not little-endian".into(),
            ));
        }
    }
    let i = zip
        .index_for_name(&pkl)
        .ok_or_else(|| bad(&pkl, "unreadable entry".into()))?;
    let r = stored_range(&mut zip, i, map, path)?;
    if r.len() as u64 > MAX_PICKLE_BYTES {
        return Err(bad(
            &pkl,
            format!("{} bytes, over the {MAX_PICKLE_BYTES}-byte limit", r.len()),
        ));
    }
    let tensors = pickle::read_state_dict(&map[r]).map_err(|e| bad(&pkl, e.to_string()))?;

    let mut storages: BTreeMap<String, (TensorRef, String, Range<usize>)> = BTreeMap::new();
    let mut out: Vec<(String, Entry)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if out.iter().any(|(n, _)| *n == name) {
            return Err(bad(&name, "stored twice in the state dict".into()));
        }
        let st = &t.storage;
        let elem = (st.dtype.bitsize() / 8) as u64;
        let range = match storages.get(&st.key) {
            Some((first, first_name, range)) => {
                if first.storage != *st {
                    return Err(bad(
                        &name,
                        format!(
                            "storage {} is declared as {:?} x {} here and as {:?} x {} for {first_name}",
                            st.key, st.dtype, st.numel, first.storage.dtype, first.storage.numel
                        ),
                    ));
                }
                if (first.offset, &first.shape, &first.stride) != (t.offset, &t.shape, &t.stride) {
                    return Err(bad(
                        &name,
                        format!(
                            "shares storage {} with {first_name} at a different offset or shape; \
                             refusing an oddly shared storage",
                            st.key
                        ),
                    ));
                }
                range.clone()
            }
            None => {
                let entry = format!("{prefix}data/{}", st.key);
                let i = zip.index_for_name(&entry).ok_or_else(|| {
                    bad(&name, format!("its storage {entry} is not in the archive"))
                })?;
                let range = stored_range(&mut zip, i, map, path)?;
                let want = st.numel.checked_mul(elem);
                if want != Some(range.len() as u64) {
                    return Err(bad(
                        &name,
                        format!(
                            "storage {entry} holds {} bytes but the pickle declares {} elements of \
                             {:?}: truncated or oversized",
                            range.len(),
                            st.numel,
                            st.dtype
                        ),
                    ));
                }
                storages.insert(st.key.clone(), (t.clone(), name.clone(), range.clone()));
                range
            }
        };
        out.push((name.clone(), view(path, &name, &t, range, elem)?));
    }
    Ok(out)
}

/// The byte range of a contiguous tensor inside its storage's range.
fn view(
    path: &Path,
    name: &str,
    t: &TensorRef,
    storage: Range<usize>,
    elem: u64,
) -> Result<Entry, CheckpointError> {
    let bad = |msg: String| format_err(path, name, msg);
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {:?} overflows", t.shape)))?;
    let mut expect = 1u64;
    for (d, (&size, &stride)) in t.shape.iter().zip(&t.stride).enumerate().rev() {
        if size > 1 && stride != expect {
            return Err(bad(format!(
                "stored with strides {:?} for shape {:?} (dimension {d} is not row-major); only \
                 contiguous tensors are read",
                t.stride, t.shape
            )));
        }
        expect = expect.saturating_mul(size);
    }
    let end = t
        .offset
        .checked_add(numel)
        .filter(|&e| e <= t.storage.numel);
    let (Some(_), Some(start)) = (end, t.offset.checked_mul(elem)) else {
        return Err(bad(format!(
            "elements {}..{}+{numel} reach past the end of storage {} ({} elements)",
            t.offset, t.offset, t.storage.key, t.storage.numel
        )));
    };
    // Both fit the storage's range, whose length is numel * elem bytes (checked by the caller).
    let start = storage.start + start as usize;
    let len = (numel * elem) as usize;
    let shape = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d} is too large"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Entry {
        shard: 0,
        dtype: t.storage.dtype,
        shape,
        range: start..start + len,
    })
}

/// The byte range of an uncompressed, unencrypted zip entry inside `map`.
fn stored_range(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    i: usize,
    map: &[u8],
    path: &Path,
) -> Result<Range<usize>, CheckpointError> {
    let f = zip
        .by_index_raw(i)
        .map_err(|e| format_err(path, "", format!("zip entry {i}: {e}")))?;
    let name = f.name().map(|n| n.to_string()).unwrap_or_default();
    if f.encrypted() || f.compression() != CompressionMethod::Stored {
        return Err(format_err(
            path,
            &name,
            "compressed or encrypted; torch.save stores entries uncompressed",
        ));
    }
    let (start, size) = (f.data_start(), f.compressed_size());
    match start.and_then(|s| s.checked_add(size).map(|e| (s, e))) {
        Some((s, e)) if f.size() == size && e <= map.len() as u64 => Ok(s as usize..e as usize),
        _ => Err(format_err(
            path,
            &name,
            "its data reaches past the end of the file (truncated archive)",
        )),
    }
}
