//! One virtual machine on KVM.
