// A tiny MNIST-format dataset for the command-line tests (cli's and spark's, through cli's test-jar).
package dev.biflow.cli;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

public final class TinyIdx {
    private TinyIdx() {}

    /** An MNIST-format split of n random 28x28 images (labels i mod 10), as the datasets' IDX files. */
    public static void writeSplit(Path dir, String prefix, int n, int seed) throws IOException {
        java.util.Random r = new java.util.Random(seed);
        ByteArrayOutputStream img = new ByteArrayOutputStream(), lab = new ByteArrayOutputStream();
        try (DataOutputStream d = new DataOutputStream(img)) {
            d.writeInt(0x00000803);
            d.writeInt(n);
            d.writeInt(28);
            d.writeInt(28);
            for (int i = 0; i < n * 28 * 28; i++) d.writeByte(r.nextInt(256));
        }
        try (DataOutputStream d = new DataOutputStream(lab)) {
            d.writeInt(0x00000801);
            d.writeInt(n);
            for (int i = 0; i < n; i++) d.writeByte(i % 10);
        }
        Files.write(dir.resolve(prefix + "-images-idx3-ubyte"), img.toByteArray());
        Files.write(dir.resolve(prefix + "-labels-idx1-ubyte"), lab.toByteArray());
    }
}
