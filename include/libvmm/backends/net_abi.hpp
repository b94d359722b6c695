// The virtio-net ABI that NetBackend frames follow (each starts with a struct
// virtio_net_hdr_v1) and that set_offloads() takes (VIRTIO_NET_F_GUEST_* feature bits): owned
// here, below both the TAP backend and the virtIO network device, which share it.
//
// <linux/virtio_net.h> for C++: the header names a struct member `class`
// (virtio_net_ctrl_hdr), a keyword in C++, so it is renamed while the header is read. Include
// this instead of <linux/virtio_net.h>; it only pulls in other <linux/...> headers.
#pragma once

#define class class_
#include <linux/virtio_net.h>
#undef class
