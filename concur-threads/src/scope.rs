//! Scoped work: closures that borrow the caller's stack, run on the pool's
//! threads, all finished before [`ThreadPool::scope`] returns.

use crate::ThreadPool;

/// Spawns borrowing closures inside [`ThreadPool::scope`].
pub struct Scope<'a, 'scope> {
    inner: &'a rayon::Scope<'scope>,
}

impl<'scope> Scope<'_, 'scope> {
    /// Runs `f` on a pool thread; it may borrow anything that outlives the scope.
    pub fn spawn<F>(&self, f: F)
    where
        F: FnOnce() + Send + 'scope,
    {
        self.inner.spawn(move |_| f());
    }
}

impl ThreadPool {
    /// Runs `f` with a [`Scope`] whose spawned closures may borrow stack
    /// data; returns once all of them have finished.
    ///
    /// # Panics
    /// If a spawned closure panics, the panic is resumed here after every
    /// closure has finished (rayon's scope semantics).
    pub fn scope<'scope, F, R>(&self, f: F) -> R
    where
        F: for<'a> FnOnce(&Scope<'a, 'scope>) -> R + Send,
        R: Send,
    {
        match self.inner().current_generation() {
            Some(g) => g.pool.scope(|s| f(&Scope { inner: s })),
            // A stopped pool still honours the scope, on the caller's thread.
            None => rayon::scope(|s| f(&Scope { inner: s })),
        }
    }
}
