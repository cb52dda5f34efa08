"""The edgefabric CrossGuard policy pack (`pulumi preview --policy-pack policies`)."""
