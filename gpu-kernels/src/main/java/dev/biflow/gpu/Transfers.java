// Counters of host-device copies and kernel launches: every copy the backend makes is explicit and counted.
package dev.biflow.gpu;

import java.util.concurrent.atomic.AtomicLong;

/**
 * What an {@link OpenClBackend} has moved and launched since it was made (or last {@link #reset}).
 * Bytes are those of the whole staging arrays handed to Aparapi's put/get, which is what crosses
 * the bus on a discrete GPU (on a CPU device such as PoCL the "copy" may be shared memory).
 */
public final class Transfers {
    private final AtomicLong puts = new AtomicLong(), gets = new AtomicLong();
    private final AtomicLong bytesToDevice = new AtomicLong(), bytesFromDevice = new AtomicLong();
    private final AtomicLong launches = new AtomicLong();

    void put(int floats) { puts.incrementAndGet(); bytesToDevice.addAndGet(4L * floats); }

    void get(int floats) { gets.incrementAndGet(); bytesFromDevice.addAndGet(4L * floats); }

    void launch() { launches.incrementAndGet(); }

    public long puts() { return puts.get(); }
    public long gets() { return gets.get(); }
    public long bytesToDevice() { return bytesToDevice.get(); }
    public long bytesFromDevice() { return bytesFromDevice.get(); }
    public long launches() { return launches.get(); }

    public void reset() {
        puts.set(0); gets.set(0); bytesToDevice.set(0); bytesFromDevice.set(0); launches.set(0);
    }

    @Override public String toString() {
        return String.format("%d launches, %d puts (%.1f MB to device), %d gets (%.1f MB from device)",
                launches(), puts(), bytesToDevice() / 1e6, gets(), bytesFromDevice() / 1e6);
    }
}
