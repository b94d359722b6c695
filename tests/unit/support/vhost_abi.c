/* The kernel's own vhost ioctl numbers and layouts, from its C headers (which C++ cannot
   include), for virtio_vhost_net_test to compare with libvmm's restatement of them. */
#include <linux/vhost.h>
#include <stddef.h>

const unsigned long libvmm_vhost_requests[] = {
    VHOST_GET_FEATURES,
    VHOST_SET_FEATURES,
    VHOST_SET_OWNER,
    VHOST_SET_MEM_TABLE,
    VHOST_SET_VRING_NUM,
    VHOST_SET_VRING_ADDR,
    VHOST_SET_VRING_BASE,
    VHOST_GET_VRING_BASE,
    VHOST_SET_VRING_KICK,
    VHOST_SET_VRING_CALL,
    VHOST_SET_VRING_ERR,
    VHOST_NET_SET_BACKEND,
    VHOST_SET_VRING_BUSYLOOP_TIMEOUT,
};
const unsigned long libvmm_vhost_sizes[] = {
    sizeof(struct vhost_memory_region),
    sizeof(struct vhost_memory),
    sizeof(struct vhost_vring_state),
    sizeof(struct vhost_vring_file),
    sizeof(struct vhost_vring_addr),
    offsetof(struct vhost_vring_addr, used_user_addr),
    offsetof(struct vhost_vring_addr, avail_user_addr),
};
const unsigned libvmm_vhost_net_f_virtio_net_hdr = VHOST_NET_F_VIRTIO_NET_HDR;
