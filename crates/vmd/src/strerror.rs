//! Error numbers as the C library words them, for messages a user reads.

/// The C library's text for `errno` ("Inappropriate ioctl for device"),
/// without the "(os error N)" that `std::io::Error` adds, for messages a
/// user reads.
pub fn strerror(errno: i32) -> String {
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: the buffer and its length are valid; strerror_r (the XSI
    // one, which libc binds) NUL-terminates what it writes into it.
    if unsafe { libc::strerror_r(errno, buf.as_mut_ptr(), buf.len()) } != 0 {
        return format!("error {errno}");
    }
    // SAFETY: NUL-terminated within the buffer, see above.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
