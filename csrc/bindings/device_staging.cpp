#include "device_staging.h"

#include "../cuda/device_memory.h"

namespace pycomm {

DeviceStaging::DeviceStaging(void* dev, size_t bytes, void* stream, bool send)
    : dev_(dev), bytes_(bytes), stream_(stream), send_(send) {
  if (bytes_ == 0) return;
  host_ = static_cast<uint8_t*>(cuda::host_alloc_pinned(bytes_));
  if (send_) {
    try {
      cuda::copy_async(host_, dev_, bytes_, stream_);
      cuda::stream_sync(stream_);
    } catch (...) {
      cuda::host_free_pinned(host_);
      throw;
    }
  }
}

DeviceStaging::~DeviceStaging() {
  if (host_) cuda::host_free_pinned(host_);
}

void DeviceStaging::deliver(size_t received) {
  if (send_ || delivered_) return;
  delivered_ = true;
  if (received == 0) return;
  cuda::copy_async(dev_, host_, received, stream_);
  cuda::stream_sync(stream_);
}

}  // namespace pycomm
