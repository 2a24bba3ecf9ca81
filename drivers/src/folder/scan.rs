//! The scanner: finds what changed in a shared folder since it last looked.
