//! The orbit stage1 interface (version 1): types shared by stage0 and every stage1 flavor.
//! The interface itself is described in `stage1/INTERFACE.md` (comes with pods).

/// The stage1 interface version this build of orbit speaks.
pub const INTERFACE_VERSION: u32 = 1;
