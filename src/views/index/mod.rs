//! The per-layer index: what one layer's tar says about every path, as a compact sorted table the
//! merge (`views::merge`) queries without reading the tar again.
//!
//! Four jobs, one module each, data flowing one way (`build` and `codec` make a [`LayerIndex`];
//! the merge only reads one):
//! - `entry`: the builder's input, [`Entry`], from a parsed tar entry or a test's constructors.
//! - `build`: the same-layer rules that turn a layer's entries, in tar order, into an index
//!   ([`Builder`], [`build()`], [`build_all`]), bounded by [`IndexLimits`] and the one large-build
//!   slot.
//! - `model`: the frozen index and its query API ([`LayerIndex`], [`EntryRef`], [`Says`]).
//! - `codec`: the index as a file ([`encode`], [`decode`]), checked so that nothing a file says
//!   can make an accessor panic.
//!
//! What an entry is ([`EntryKind`]) and the basenames with a meaning of their own (whiteouts,
//! opaque markers, AUFS metadata) are `views::kind`'s, which the symlink walk
//! (`views::rootpath`) reads too; they are named here as well.

mod build;
mod codec;
mod entry;
mod model;

pub use crate::views::kind::{AUFS_PLNK, AUFS_PREFIX, EntryKind, OPAQUE, WHITEOUT_PREFIX};
pub use build::{Builder, IndexLimits, build, build_all};
pub use codec::{FORMAT_VERSION, MAGIC, decode, encode};
pub use entry::{Entry, normalise};
pub use model::{Children, EntryId, EntryRef, LayerIndex, LinkTo, RECORD_BYTES, Says, Xattrs};
