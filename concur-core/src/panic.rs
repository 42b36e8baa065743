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

/// Drops every item, each on its own, then resumes the first panic a
/// `Drop` raised, if any. Dropping a whole `Vec` of values whose `Drop`
/// panics aborts the process at the second panic (it is raised while the
/// first unwinds); this way the caller sees one panic, as for one value,
/// and every item is still dropped. Called while the thread is already
/// unwinding, it resumes nothing.
pub fn drop_each<T>(items: impl IntoIterator<Item = T>) {
    let mut first = None;
    for item in items {
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(move || drop(item))) {
            match first {
                None => first = Some(p),
                // Dropping a payload can itself panic; never let that escape.
                Some(_) => drop(panic::catch_unwind(AssertUnwindSafe(move || drop(p)))),
            }
        }
    }
    match first {
        // Already unwinding (dropped on the way out of another panic): a
        // second panic would abort, so this one is only reported by the hook.
        Some(p) if std::thread::panicking() => {
            drop(panic::catch_unwind(AssertUnwindSafe(move || drop(p))))
        }
        Some(p) => panic::resume_unwind(p),
        None => {}
    }
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

    struct Bomb<'a>(&'a std::sync::atomic::AtomicUsize);

    impl Drop for Bomb<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("bomb");
        }
    }

    #[test]
    fn drop_each_drops_all_and_panics_once() {
        let dropped = std::sync::atomic::AtomicUsize::new(0);
        let bombs: Vec<Bomb<'_>> = (0..3).map(|_| Bomb(&dropped)).collect();
        let caught = panic::catch_unwind(AssertUnwindSafe(|| drop_each(bombs)));
        assert_eq!(payload_message(&*caught.unwrap_err()), "bomb");
        assert_eq!(dropped.into_inner(), 3);
    }

    #[test]
    fn passes_values_through() {
        assert_eq!(catch(|| 5).unwrap(), 5);
    }
}
