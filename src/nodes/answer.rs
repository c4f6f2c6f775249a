//! [`Answer`]: what the engine says now, later, or once an effect has taken place.
//!
//! # Why three kinds
//! A single node knows every answer at once (`Now`, no allocation, no await: the fast
//! path). In cluster mode an answer may wait for other nodes (`Later`), and some requests
//! must take effect before the lines behind them on the same connection run (`Barrier`:
//! a `/group` looks its members up in Redis before it pushes to them, a `/push` claims
//! its retry key before it runs). The answer says which it is, so nobody has to guess
//! from a request's verb whether the lines behind it must wait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A future the engine hands back, boxed once.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the engine answers to one request.
pub enum Answer<T> {
    /// Done and known.
    Now(T),
    /// Done (this node's part, and anything that fixes order, such as a publish queued in
    /// line order); what it came to is known once the future resolves.
    Later(Pending<T>),
    /// Not done yet: the connection's later requests run only once this resolves (to the
    /// answer proper, which may still be `Later`).
    Barrier(Pending<Answer<T>>),
}

impl<T> std::fmt::Debug for Answer<T>
where
    T: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Now(t) => f.debug_tuple("Now").field(t).finish(),
            Answer::Later(_) => f.write_str("Later(..)"),
            Answer::Barrier(_) => f.write_str("Barrier(..)"),
        }
    }
}

impl<T: Send + 'static> Answer<T> {
    /// An answer known once `f` resolves.
    pub fn later(f: impl Future<Output = T> + Send + 'static) -> Answer<T> {
        Answer::Later(Box::pin(f))
    }

    /// An answer whose effect takes place when `f` resolves (see [`Answer::Barrier`]).
    pub fn barrier(f: impl Future<Output = Answer<T>> + Send + 'static) -> Answer<T> {
        Answer::Barrier(Box::pin(f))
    }

    /// `f` of the answer: at once for `Now` (with `ctx` borrowed, so the fast path clones
    /// nothing), once it is known otherwise (with `ctx` cloned into the future).
    pub fn then<C, U>(self, ctx: &Arc<C>, f: impl FnOnce(&C, T) -> U + Send + 'static) -> Answer<U>
    where
        C: ?Sized + Send + Sync + 'static,
        U: Send + 'static,
    {
        match self {
            Answer::Now(t) => Answer::Now(f(ctx, t)),
            Answer::Later(fut) => {
                let ctx = ctx.clone();
                Answer::later(async move { f(&ctx, fut.await) })
            }
            Answer::Barrier(fut) => {
                let ctx = ctx.clone();
                Answer::barrier(async move { fut.await.then(&ctx, f) })
            }
        }
    }

    /// [`Answer::then`] for an `f` that needs no context.
    pub fn map<U: Send + 'static>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Answer<U> {
        match self {
            Answer::Now(t) => Answer::Now(f(t)),
            Answer::Later(fut) => Answer::later(async move { f(fut.await) }),
            Answer::Barrier(fut) => Answer::barrier(async move { fut.await.map(f) }),
        }
    }

    /// Chains the next step, whose answer it becomes. Inside a `Barrier` the next step
    /// runs before the barrier resolves, so what it does (a publish queued, say) happens
    /// in line order too; after a `Later` it runs once that is known.
    pub fn and_then<C, U>(
        self,
        ctx: &Arc<C>,
        f: impl FnOnce(&Arc<C>, T) -> Answer<U> + Send + 'static,
    ) -> Answer<U>
    where
        C: ?Sized + Send + Sync + 'static,
        U: Send + 'static,
    {
        match self {
            Answer::Now(t) => f(ctx, t),
            Answer::Later(fut) => {
                let ctx = ctx.clone();
                Answer::later(async move { f(&ctx, fut.await).resolve().await })
            }
            Answer::Barrier(fut) => {
                let ctx = ctx.clone();
                Answer::barrier(async move { fut.await.and_then(&ctx, f) })
            }
        }
    }

    /// The answer, whatever its kind.
    pub async fn resolve(self) -> T {
        let mut answer = self;
        loop {
            match answer {
                Answer::Now(t) => return t,
                Answer::Later(fut) => return fut.await,
                Answer::Barrier(fut) => answer = fut.await,
            }
        }
    }

    /// Waits for the effect (a `Barrier`'s), not for the answer: `Now` or `Later`.
    pub async fn took_effect(self) -> Answer<T> {
        let mut answer = self;
        while let Answer::Barrier(fut) = answer {
            answer = fut.await;
        }
        answer
    }
}
