//! Secret environment variables (the database URL, the policy secret, the
//! master API key, webhook secrets): read once, then blanked in this
//! process's environment block so that a job's child process cannot read
//! them from `/proc/<pid>/environ`. Below every other module: the config and
//! the handlers both read secrets through it.

use crate::error::{Error, Result};

/// Secrets read from the environment, kept here once read: the variable
/// itself is blanked in place (see [`take`]), so a second read
/// (a SIGHUP reload) must come from here.
static SECRETS: std::sync::Mutex<Option<std::collections::HashMap<String, String>>> =
    std::sync::Mutex::new(None);

/// Reads the secret variable `var` and blanks its value in this process's
/// environment block: the bytes `/proc/<pid>/environ` shows are overwritten
/// with NULs, so a job's child process (same user) that reads its parent's
/// environment finds no database URL, policy secret, API key or webhook
/// secret there. The variable is not removed (unsetenv under other threads'
/// getenv is undefined behaviour); it reads as empty afterwards. Children
/// never inherit it anyway: every handler starts them with a cleared
/// environment.
pub fn take(var: &str) -> Result<Option<String>> {
    let mut guard = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let cache = guard.get_or_insert_with(Default::default);
    if let Some(v) = cache.get(var) {
        return Ok(Some(v.clone()));
    }
    let Some(v) = non_empty(var)? else {
        return Ok(None);
    };
    cache.insert(var.to_string(), v.clone());
    blank_in_place(var);
    Ok(Some(v))
}

/// Overwrites the value of `var` in the environment block with NULs.
fn blank_in_place(var: &str) {
    let Ok(name) = std::ffi::CString::new(var) else {
        return;
    };
    // SAFETY: getenv returns NULL or a pointer to the NUL-terminated value
    // inside the process's environment strings, which are writable memory
    // (the initial block is on the stack, set ones on the heap). Only this
    // function writes them, under the SECRETS lock; the length is taken
    // before writing and stays within the string.
    unsafe {
        let p = libc::getenv(name.as_ptr());
        if !p.is_null() {
            let len = libc::strlen(p);
            std::ptr::write_bytes(p, 0, len);
        }
    }
}

/// The value of `var`; `None` when unset or blank; an error naming it when
/// it is not UTF-8.
pub(crate) fn non_empty(var: &str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Config(format!("{var} is not valid UTF-8")))
        }
    }
}
