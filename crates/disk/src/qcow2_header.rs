//! Checks a qcow2 image before imago is let near it.
//!
//! imago does the reading and writing; this module only decides whether an
//! image is one we will touch at all, and says precisely why not
//! otherwise. imago accepts some images it cannot serve correctly (an
//! encrypted image would read as ciphertext, tables outside the file would
//! read as zeroes) and some of its refusals are terse, so the header, the
//! L1 table and the refcount table are checked here, reading only, before
//! imago opens the file. The rest of the metadata is imago's to check as it
//! meets it; reads that start past the end of the file fail (see
//! `ImageFile`).
//!
//! Also extracts what the chain opener needs: the backing file name and
//! format. imago skips header extensions of version 2 images, where
//! qemu-img still records the backing format, so they are read here.

use std::path::Path;

use proto::control::DiskFormat;

use crate::error::{DiskError, Problem};
use crate::image_file::ImageFile;

const MAGIC: u32 = 0x5146_49fb;
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;
const MIN_CLUSTER_BITS: u32 = 9;
const MAX_CLUSTER_BITS: u32 = 21;
const MAX_BACKING_NAME: usize = 1023;

/// Header extension types (qcow2 specification).
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_EXTERNAL_DATA_FILE: u32 = 0x4441_5441;
const EXT_ENCRYPTION: u32 = 0x0537_be77;

/// Incompatible feature bits.
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

/// Host offset bits of L1 entries and refcount table entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Bits that must be zero in an L1 entry (all but the offset and COPIED).
const L1_RESERVED: u64 = !(OFFSET_MASK | (1 << 63));
/// Bits that must be zero in a refcount table entry.
const REFTABLE_RESERVED: u64 = 0x1ff;

/// The backing file named in an image header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingRef {
    /// As stored: relative names are relative to the image's directory.
    pub name: String,
    /// From the backing format header extension; `None` means probe.
    pub format: Option<DiskFormat>,
}

/// What the chain opener and the backend need from a checked header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Info {
    pub version: u32,
    pub cluster_size: u64,
    pub virtual_size: u64,
    pub backing: Option<BackingRef>,
}

fn be32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(buf[at..at + 4].try_into().unwrap())
}

fn be64(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(buf[at..at + 8].try_into().unwrap())
}

fn read(file: &ImageFile, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
    file.read_vectored_at(&mut [std::io::IoSliceMut::new(buf)], offset)
        .map_err(|e| DiskError::io(file.path(), e))
}

/// Checks the image in `file` and returns its description. Reads only.
pub fn inspect(file: &ImageFile) -> Result<Qcow2Info, DiskError> {
    let path = file.path();
    let file_len = file.len();
    let truncated = |what: String| DiskError::new(path, Problem::Truncated(what));

    if file_len < V2_HEADER_LEN as u64 {
        if file_len < 4 {
            // Too short to even carry the magic: not a qcow2 file at all.
            return Err(DiskError::new(path, Problem::BadMagic));
        }
        let mut magic = [0u8; 4];
        read(file, &mut magic, 0)?;
        if u32::from_be_bytes(magic) != MAGIC {
            return Err(DiskError::new(path, Problem::BadMagic));
        }
        return Err(truncated(format!(
            "{file_len} bytes, shorter than a qcow2 header"
        )));
    }

    let mut fixed = [0u8; V3_HEADER_LEN];
    let fixed_len = (file_len as usize).min(V3_HEADER_LEN);
    read(file, &mut fixed[..fixed_len], 0)?;
    if be32(&fixed, 0) != MAGIC {
        return Err(DiskError::new(path, Problem::BadMagic));
    }
    let version = be32(&fixed, 4);
    if version != 2 && version != 3 {
        return Err(DiskError::unsupported(
            path,
            format!("qcow2 version {version}"),
        ));
    }
    if version == 3 && file_len < V3_HEADER_LEN as u64 {
        return Err(truncated(format!(
            "{file_len} bytes, shorter than a qcow2 v3 header"
        )));
    }

    let cluster_bits = be32(&fixed, 20);
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(DiskError::unsupported(
            path,
            format!("cluster size 2^{cluster_bits} (must be 512 B to 2 MiB)"),
        ));
    }
    let cluster_size = 1u64 << cluster_bits;

    let crypt_method = be32(&fixed, 32);
    match crypt_method {
        0 => {}
        1 => return Err(DiskError::unsupported(path, "encrypted (AES)")),
        2 => return Err(DiskError::unsupported(path, "encrypted (LUKS)")),
        n => {
            return Err(DiskError::unsupported(
                path,
                format!("encryption method {n}"),
            ));
        }
    }

    let (header_len, incompatible, refcount_order) = if version == 3 {
        (
            be32(&fixed, 100) as usize,
            be64(&fixed, 72),
            be32(&fixed, 96),
        )
    } else {
        (V2_HEADER_LEN, 0, 4)
    };
    if version == 3 && !(V3_HEADER_LEN as u64..=cluster_size).contains(&(header_len as u64)) {
        return Err(DiskError::corrupt(
            path,
            format!("header length {header_len}"),
        ));
    }
    check_incompatible_features(path, incompatible)?;
    if refcount_order > 6 {
        return Err(DiskError::corrupt(
            path,
            format!("refcount order {refcount_order}"),
        ));
    }

    // Everything else of the header lives in the first cluster.
    let first_len = cluster_size.min(file_len) as usize;
    let mut first = vec![0u8; first_len];
    read(file, &mut first, 0)?;
    let backing_name = backing_name(path, &first, cluster_size)?;
    let extensions = read_extensions(path, &first, header_len)?;
    if extensions.encrypted {
        return Err(DiskError::unsupported(path, "encrypted (LUKS)"));
    }
    if extensions.external_data_file {
        return Err(DiskError::unsupported(path, "external data file"));
    }

    let virtual_size = be64(&fixed, 24);
    // Keeps every offset computation below from overflowing; qcow2 cannot
    // address more than 2^56 bytes of host file anyway.
    if virtual_size > (1 << 62) {
        return Err(DiskError::corrupt(
            path,
            format!("virtual size {virtual_size}"),
        ));
    }
    check_l1_table(file, &fixed, cluster_bits, virtual_size)?;
    let reftable = check_refcount_table(file, &fixed, cluster_size)?;
    check_metadata_refcounts(file, &fixed, cluster_bits, refcount_order, &reftable)?;

    let backing = backing_name.map(|name| BackingRef {
        name,
        format: extensions.backing_format,
    });
    if let Some(format) = &extensions.unknown_backing_format {
        return Err(DiskError::unsupported(
            path,
            format!("backing file format '{format}'"),
        ));
    }
    Ok(Qcow2Info {
        version,
        cluster_size,
        virtual_size,
        backing,
    })
}

fn check_incompatible_features(path: &Path, bits: u64) -> Result<(), DiskError> {
    if bits & INCOMPAT_CORRUPT != 0 {
        return Err(DiskError::corrupt(path, "the image is marked corrupt"));
    }
    if bits & INCOMPAT_DIRTY != 0 {
        return Err(DiskError::unsupported(
            path,
            "the image is marked dirty (lazy refcounts); repair it with `qemu-img check -r all`",
        ));
    }
    if bits & INCOMPAT_DATA_FILE != 0 {
        return Err(DiskError::unsupported(path, "external data file"));
    }
    if bits & INCOMPAT_COMPRESSION != 0 {
        return Err(DiskError::unsupported(
            path,
            "compression type other than zlib",
        ));
    }
    if bits & INCOMPAT_EXTL2 != 0 {
        return Err(DiskError::unsupported(
            path,
            "extended L2 entries (subclusters)",
        ));
    }
    if bits != 0 {
        return Err(DiskError::unsupported(
            path,
            format!("unknown incompatible features {bits:#x}"),
        ));
    }
    Ok(())
}

fn backing_name(path: &Path, first: &[u8], cluster_size: u64) -> Result<Option<String>, DiskError> {
    let offset = be64(first, 8);
    let len = be32(first, 16) as u64;
    if offset == 0 || len == 0 {
        return Ok(None);
    }
    if len > MAX_BACKING_NAME as u64 {
        return Err(DiskError::corrupt(
            path,
            format!("backing file name of {len} bytes"),
        ));
    }
    let end = offset.saturating_add(len);
    if end > cluster_size {
        return Err(DiskError::corrupt(
            path,
            "backing file name lies outside the header cluster",
        ));
    }
    if end > first.len() as u64 {
        return Err(DiskError::new(
            path,
            Problem::Truncated("the backing file name lies past the end of the file".into()),
        ));
    }
    let bytes = &first[offset as usize..end as usize];
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| DiskError::corrupt(path, "backing file name is not valid UTF-8"))
}

#[derive(Default)]
struct Extensions {
    backing_format: Option<DiskFormat>,
    unknown_backing_format: Option<String>,
    external_data_file: bool,
    encrypted: bool,
}

/// Walks the header extensions. They start right after the header, in v2
/// images too, and end with an end marker or at the end of the cluster.
fn read_extensions(path: &Path, first: &[u8], header_len: usize) -> Result<Extensions, DiskError> {
    let mut found = Extensions::default();
    let mut at = header_len;
    while at + 8 <= first.len() {
        let kind = be32(first, at);
        let len = be32(first, at + 4) as usize;
        at += 8;
        if kind == EXT_END {
            break;
        }
        let Some(data) = first.get(at..at.saturating_add(len)) else {
            return Err(DiskError::corrupt(
                path,
                "header extension runs past the header cluster",
            ));
        };
        match kind {
            EXT_BACKING_FORMAT => {
                let name = String::from_utf8_lossy(data);
                match name.as_ref() {
                    "qcow2" => found.backing_format = Some(DiskFormat::Qcow2),
                    "raw" | "file" => found.backing_format = Some(DiskFormat::Raw),
                    other => found.unknown_backing_format = Some(other.to_string()),
                }
            }
            EXT_EXTERNAL_DATA_FILE => found.external_data_file = true,
            EXT_ENCRYPTION => found.encrypted = true,
            _ => {}
        }
        at = at.saturating_add(len.next_multiple_of(8));
    }
    Ok(found)
}

fn check_l1_table(
    file: &ImageFile,
    fixed: &[u8],
    cluster_bits: u32,
    virtual_size: u64,
) -> Result<(), DiskError> {
    let path = file.path();
    let cluster_size = 1u64 << cluster_bits;
    let l1_entries = be32(fixed, 36) as u64;
    let l1_offset = be64(fixed, 40);
    // One L1 entry maps one L2 table of cluster_size / 8 clusters.
    let bytes_per_l1_entry = cluster_size << (cluster_bits - 3);
    let needed = virtual_size.div_ceil(bytes_per_l1_entry);
    if l1_entries < needed {
        return Err(DiskError::corrupt(
            path,
            format!("L1 table has {l1_entries} entries, the disk size needs {needed}"),
        ));
    }
    if l1_entries == 0 {
        return Ok(());
    }
    if !l1_offset.is_multiple_of(cluster_size) || l1_offset == 0 {
        return Err(DiskError::corrupt(
            path,
            format!("L1 table offset {l1_offset:#x} is not a cluster boundary after the header"),
        ));
    }
    let l1_bytes = l1_entries * 8;
    if l1_offset.saturating_add(l1_bytes) > file.len() {
        return Err(DiskError::corrupt(
            path,
            format!(
                "L1 table ({l1_entries} entries at {l1_offset:#x}) lies outside the file ({} bytes)",
                file.len()
            ),
        ));
    }
    let table = read_table(file, l1_offset, l1_bytes)?;
    for (index, entry) in table
        .chunks_exact(8)
        .map(|e| u64::from_be_bytes(e.try_into().unwrap()))
        .enumerate()
    {
        if entry & L1_RESERVED != 0 {
            return Err(DiskError::corrupt(
                path,
                format!("L1 entry {index} has reserved bits set ({entry:#x})"),
            ));
        }
        let l2 = entry & OFFSET_MASK;
        if l2 == 0 {
            continue;
        }
        if !l2.is_multiple_of(cluster_size) {
            return Err(DiskError::corrupt(
                path,
                format!("L2 table {index} at {l2:#x} is not cluster aligned"),
            ));
        }
        if l2.saturating_add(cluster_size) > file.len() {
            return Err(DiskError::corrupt(
                path,
                format!(
                    "L2 table {index} at {l2:#x} lies outside the file ({} bytes)",
                    file.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the refcount table and returns its entries.
fn check_refcount_table(
    file: &ImageFile,
    fixed: &[u8],
    cluster_size: u64,
) -> Result<Vec<u64>, DiskError> {
    let path = file.path();
    let offset = be64(fixed, 48);
    let clusters = be32(fixed, 56) as u64;
    if clusters == 0 || offset == 0 || !offset.is_multiple_of(cluster_size) {
        return Err(DiskError::corrupt(
            path,
            format!("refcount table ({clusters} clusters at {offset:#x}) is misplaced"),
        ));
    }
    let bytes = clusters.saturating_mul(cluster_size);
    if offset.saturating_add(bytes) > file.len() {
        return Err(DiskError::corrupt(
            path,
            format!(
                "refcount table ({clusters} clusters at {offset:#x}) lies outside the file ({} bytes)",
                file.len()
            ),
        ));
    }
    let table = read_table(file, offset, bytes)?;
    let entries: Vec<u64> = table
        .chunks_exact(8)
        .map(|e| u64::from_be_bytes(e.try_into().unwrap()))
        .collect();
    for (index, &entry) in entries.iter().enumerate() {
        if entry == 0 {
            continue;
        }
        if entry & REFTABLE_RESERVED != 0 || !entry.is_multiple_of(cluster_size) {
            return Err(DiskError::corrupt(
                path,
                format!("refcount block {index} at {entry:#x} is not cluster aligned"),
            ));
        }
        if entry.saturating_add(cluster_size) > file.len() {
            return Err(DiskError::corrupt(
                path,
                format!(
                    "refcount block {index} at {entry:#x} lies outside the file ({} bytes)",
                    file.len()
                ),
            ));
        }
    }
    Ok(entries)
}

fn read_table(file: &ImageFile, offset: u64, bytes: u64) -> Result<Vec<u8>, DiskError> {
    let mut table = vec![0u8; bytes as usize];
    read(file, &mut table, offset)?;
    Ok(table)
}

/// The clusters every qcow2 image uses for its own metadata (the header,
/// the L1 table, the refcount table) must be counted as in use. An image
/// whose refcounts say otherwise would have its header or tables handed
/// out as free space on the first write (and imago's allocator can recurse
/// without end on a refcount table with no refcount blocks at all).
fn check_metadata_refcounts(
    file: &ImageFile,
    fixed: &[u8],
    cluster_bits: u32,
    refcount_order: u32,
    reftable: &[u64],
) -> Result<(), DiskError> {
    let path = file.path();
    let cluster_size = 1u64 << cluster_bits;
    let clusters_of = |offset: u64, bytes: u64| {
        let first = offset >> cluster_bits;
        let last = (offset + bytes.max(1) - 1) >> cluster_bits;
        first..=last
    };
    let l1_entries = be32(fixed, 36) as u64;
    let mut metadata: Vec<(u64, &str)> = clusters_of(0, 1).map(|c| (c, "header")).collect();
    if l1_entries > 0 {
        metadata.extend(clusters_of(be64(fixed, 40), l1_entries * 8).map(|c| (c, "L1 table")));
    }
    metadata.extend(
        clusters_of(be64(fixed, 48), be32(fixed, 56) as u64 * cluster_size)
            .map(|c| (c, "refcount table")),
    );

    let refcount_bits = 1u64 << refcount_order;
    let entries_per_block = (cluster_size * 8) / refcount_bits;
    let mut block = vec![0u8; cluster_size as usize];
    let mut loaded: Option<u64> = None;
    for (cluster, what) in metadata {
        let index = (cluster / entries_per_block) as usize;
        let block_offset = reftable.get(index).copied().unwrap_or(0) & OFFSET_MASK;
        if block_offset == 0 {
            return Err(DiskError::corrupt(
                path,
                format!("no refcount block covers the {what} (cluster {cluster})"),
            ));
        }
        if loaded != Some(block_offset) {
            read(file, &mut block, block_offset)?;
            loaded = Some(block_offset);
        }
        // The bytes holding this cluster's refcount; for widths below a
        // byte, the whole byte (a non-zero byte is enough for this check).
        let bit = (cluster % entries_per_block) * refcount_bits;
        let first = (bit / 8) as usize;
        let last = ((bit + refcount_bits - 1) / 8) as usize;
        if block[first..=last].iter().all(|&b| b == 0) {
            return Err(DiskError::corrupt(
                path,
                format!("the {what} (cluster {cluster}) has a refcount of zero"),
            ));
        }
    }
    Ok(())
}
