//! Catching a task's panic with its message and location, the same way on
//! every backend.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::error::{ErrorKind, TaskError};

thread_local! {
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if let Some(loc) = info.location() {
                let at = format!("{}:{}:{}", loc.file(), loc.line(), loc.column());
                LOCATION.with(|l| *l.borrow_mut() = Some(at));
            }
            previous(info);
        }));
    });
}

/// The text of a panic payload.
pub fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// Runs `f`, turning a panic into [`ErrorKind::Panicked`] with the panic's
/// message and `file:line:column`. The panic is still reported by the
/// process's panic hook (it prints to stderr as usual).
///
/// # Errors
/// [`ErrorKind::Panicked`] when `f` panics.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, TaskError> {
    install_hook();
    LOCATION.with(|l| l.borrow_mut().take());
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload_message(&*payload);
        let location = LOCATION.with(|l| l.borrow_mut().take());
        // Dropping a payload can itself panic; never let that escape.
        let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
        TaskError::new(ErrorKind::Panicked { message, location })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_message_and_location() {
        let err = catch(|| -> u8 { panic!("boom {}", 7) }).unwrap_err();
        match err.kind() {
            ErrorKind::Panicked { message, location } => {
                assert_eq!(message, "boom 7");
                assert!(location.as_deref().unwrap().contains("panic.rs"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn passes_values_through() {
        assert_eq!(catch(|| 5).unwrap(), 5);
    }
}
