// kvm-hold: run by the emulated KVM host's /init (tools/emuhost/host-init) before any payload;
// holds one KVM VM with one vCPU (and, on x86_64, an in-kernel interrupt controller) open until
// the host powers off. The vCPU never runs. It returns once the VM is there, leaving a child
// that holds it.
//
// Why: KVM flips kernel static keys when the first VM or vCPU appears and when the last one
// goes (the scheduler's preempt notifiers, patched into __schedule(); on x86_64 the local APIC's
// "software disabled" key). Linux patches such a key with int3 breakpoints (text_poke_bp) while
// the other CPUs keep running the code, and QEMU 7.2's multi-threaded TCG does not always see
// the change: seen here as an emulated x86_64 host whose two CPUs loop in exc_int3 and
// __schedule for ever (at the preempt_notifier_key site), when a VM came or went. With this VM
// alive from boot those keys are switched once, before any test runs, and never again; and an
// x86_64 host boots with one CPU online (maxcpus=1) until this has run, so that once has no
// other CPU to race with.
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(void) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) {
    perror("kvm-hold: /dev/kvm");
    return 1;
  }
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (vm < 0) {
    perror("kvm-hold: KVM_CREATE_VM");
    return 1;
  }
#ifdef __x86_64__
  if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) perror("kvm-hold: KVM_CREATE_IRQCHIP");
#endif
  if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0) perror("kvm-hold: KVM_CREATE_VCPU");
  pid_t holder = fork();
  if (holder < 0) {
    perror("kvm-hold: fork");
    return 1;
  }
  if (holder > 0) return 0;
  // The holder lets go of the console: host-init's last close of it at power off waits for the
  // serial line to drain (so the status line is not cut), which a holder still on it defeats.
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }
  for (;;) pause();
}
