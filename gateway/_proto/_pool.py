"""modelgate's own protobuf descriptor pool (see tools/gen_protos.py for why it is not the default)."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
