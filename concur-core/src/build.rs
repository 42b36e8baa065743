//! The build identity of the running executable: two processes with the
//! same [`build_id`] run the same code, so they encode and decode values
//! alike and know the same registered tasks. The process backend checks it
//! in its handshake; the distributed backend stamps it on every task.

use std::sync::OnceLock;

/// An identity of the running executable: its GNU build-id note when it has
/// one (`gnu:` and the note), else its file's device, inode, size and
/// modification time (`stat:` and those numbers). Read once and cached.
pub fn build_id() -> &'static [u8] {
    static ID: OnceLock<Vec<u8>> = OnceLock::new();
    ID.get_or_init(compute)
}

fn compute() -> Vec<u8> {
    if let Some(id) = gnu_build_id() {
        let mut v = b"gnu:".to_vec();
        v.extend_from_slice(&id);
        return v;
    }
    let mut v = b"stat:".to_vec();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::env::current_exe().and_then(std::fs::metadata) {
            for n in [
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
            ] {
                v.extend_from_slice(&n.to_le_bytes());
            }
        }
    }
    v
}

/// The main program's `NT_GNU_BUILD_ID` note, read from its loaded image.
#[cfg(target_os = "linux")]
fn gnu_build_id() -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `info` for the duration of the
        // call; `out` is the `Option<Vec<u8>>` given to dl_iterate_phdr
        // below. The first object reported is the main program. The note
        // segments are mapped (PT_NOTE lies in a PT_LOAD segment) and their
        // bounds come from the program header.
        unsafe {
            let info = &*info;
            let out = &mut *(out as *mut Option<Vec<u8>>);
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            for ph in headers.iter().filter(|ph| ph.p_type == libc::PT_NOTE) {
                let start = (info.dlpi_addr as usize + ph.p_vaddr as usize) as *const u8;
                let notes = std::slice::from_raw_parts(start, ph.p_memsz as usize);
                let align = (ph.p_align as usize).max(4);
                if let Some(id) = find_note(notes, align, b"GNU\0", NT_GNU_BUILD_ID) {
                    *out = Some(id.to_vec());
                    break;
                }
            }
        }
        1 // stop after the main program
    }
    let mut out: Option<Vec<u8>> = None;
    // SAFETY: `first` matches the callback type and only writes to `out`,
    // which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(Some(first), &mut out as *mut _ as *mut libc::c_void);
    }
    out.filter(|id| !id.is_empty())
}

/// Elsewhere the file's metadata stands in.
#[cfg(not(target_os = "linux"))]
fn gnu_build_id() -> Option<Vec<u8>> {
    None
}

/// The descriptor of the first note named `name` of type `kind` in an ELF
/// note segment whose entries are padded to `align` bytes.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn find_note<'a>(mut notes: &'a [u8], align: usize, name: &[u8], kind: u32) -> Option<&'a [u8]> {
    let pad = |n: usize| n.checked_add(align - 1).map(|n| n & !(align - 1));
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    while notes.len() >= 12 {
        let namesz = word(notes, 0)? as usize;
        let descsz = word(notes, 4)? as usize;
        let ty = word(notes, 8)?;
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = pad(name_end)?;
        let desc_end = desc_start.checked_add(descsz)?;
        let next = pad(desc_end)?;
        if ty == kind && notes.get(12..name_end)? == name {
            return notes.get(desc_start..desc_end);
        }
        notes = notes.get(next..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(name);
        v.resize(v.len().next_multiple_of(4), 0);
        v.extend_from_slice(desc);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn finds_the_build_id_note_among_others() {
        let mut notes = note(b"GNU\0", 5, &[1, 2, 3, 4, 5, 6, 7, 8]);
        notes.extend(note(b"GNU\0", 3, &[0xab; 20]));
        assert_eq!(find_note(&notes, 4, b"GNU\0", 3), Some(&[0xab; 20][..]));
        assert_eq!(find_note(&notes, 4, b"Go\0\0", 3), None);
        // Truncated or lying sizes end the search, never panic.
        assert_eq!(find_note(&notes[..notes.len() - 3], 4, b"GNU\0", 3), None);
        let mut lying = note(b"GNU\0", 3, &[1; 4]);
        lying[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(find_note(&lying, 4, b"GNU\0", 3), None);
    }

    #[test]
    fn this_executable_has_a_build_id() {
        let id = build_id();
        assert!(
            id.starts_with(b"gnu:") || id.starts_with(b"stat:"),
            "{id:?}"
        );
        assert!(id.len() > 8);
        assert_eq!(id, compute());
    }
}
