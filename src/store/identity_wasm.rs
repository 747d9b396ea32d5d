//! The browser build's stand-in for `identity.rs`: a file on OPFS lives in
//! the sync access handle pool, which only the owning tab's worker opens, so
//! it cannot be replaced under the store; there is nothing to watch.

use crate::error::Error;

/// Never constructed on wasm32.
pub(crate) enum FileWatch {}

impl FileWatch {
    pub(crate) fn new(_path: &str) -> Option<FileWatch> {
        None
    }

    pub(crate) fn refused(&self) -> Option<Error> {
        match *self {}
    }

    pub(crate) fn check(&self) -> Option<Error> {
        match *self {}
    }
}
