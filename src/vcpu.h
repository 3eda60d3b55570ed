/* The vCPU run loop: one thread per vCPU, turning backend exits into bus accesses. */
#ifndef VMM_VCPU_H
#define VMM_VCPU_H

#include "vm.h"

int vcpu_start(struct vcpu *vcpu);
void vcpu_join(struct vcpu *vcpu);
/* Handle one exit; returns false when the vCPU must stop. Exposed for the tests. */
bool vcpu_handle_exit(struct vcpu *vcpu, struct vcpu_exit *exit);

#endif
