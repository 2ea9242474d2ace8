// IDX: round trips plain and gzipped, MNIST-style files, and the errors for wrong magic, truncation and absurd dims.
package dev.biflow.engine.io;

import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.*;

class IdxTest {
    @TempDir Path dir;

    /** A tiny MNIST-like image batch: 3 images of 4x5, pixel = (17 * i) mod 256. */
    static Tensor images() {
        float[] v = new float[3 * 4 * 5];
        for (int i = 0; i < v.length; i++) v[i] = (17 * i) % 256;
        return Tensor.of(v, 3, 4, 5);
    }

    @Test
    void mnistStyleImagesAndLabelsRoundTripPlainAndGzipped() throws IOException {
        for (boolean gz : new boolean[]{false, true}) {
            Path img = dir.resolve("images-" + gz), lab = dir.resolve("labels-" + gz);
            Idx.write(img, Idx.Type.UBYTE, images(), gz);
            Idx.writeLabels(lab, new int[]{7, 2, 1}, gz);
            byte[] onDisk = Files.readAllBytes(img);
            assertEquals(gz, onDisk[0] == 0x1F && onDisk[1] == (byte) 0x8B, "gzip magic only when asked");
            Idx.Data d = Idx.read(img);
            assertEquals(0x00000803, d.magic());
            assertArrayEquals(new int[]{3, 4, 5}, d.dims());
            Tensor t = Idx.readTensor(img);
            assertArrayEquals(new int[]{3, 4, 5}, t.shape());
            assertArrayEquals(images().data(), t.data());
            assertEquals(0x00000801, Idx.read(lab).magic());
            assertArrayEquals(new int[]{7, 2, 1}, Idx.readLabels(lab));
        }
    }

    @Test
    void headerBytesAreTheMnistLayout() {
        byte[] b = Idx.encode(Idx.Type.UBYTE, images());
        ByteBuffer bb = ByteBuffer.wrap(b);
        assertEquals(0x00000803, bb.getInt());
        assertEquals(3, bb.getInt());
        assertEquals(4, bb.getInt());
        assertEquals(5, bb.getInt());
        assertEquals(16 + 60, b.length);
        assertEquals((byte) (17 * 59 % 256), b[b.length - 1]);
    }

    @Test
    void everyTypeRoundTrips() throws CorruptFileException {
        Tensor v = Tensor.of(new float[]{-3, 0, 100, 7}, 2, 2);
        for (Idx.Type type : Idx.Type.values()) {
            Tensor in = type == Idx.Type.UBYTE ? Tensor.of(new float[]{3, 0, 255, 7}, 2, 2) : v;
            Idx.Data d = Idx.read(Idx.encode(type, in), type.name());
            assertEquals(type, d.type());
            assertArrayEquals(in.data(), d.toTensor().data(), type.name());
        }
        Tensor f = Tensor.of(new float[]{0.1f, -0f, Float.NaN}, 3);
        assertArrayEquals(f.data(), Idx.read(Idx.encode(Idx.Type.FLOAT, f), "f").toTensor().data());
        assertArrayEquals(new int[]{-3, 0, 100, 7}, Idx.read(Idx.encode(Idx.Type.SHORT, v), "s").toInts());
    }

    @Test
    void encodeRejectsValuesOutsideTheType() {
        var e = assertThrows(IllegalArgumentException.class, () -> Idx.encode(Idx.Type.UBYTE, Tensor.of(new float[]{1, 256}, 2)));
        assertTrue(e.getMessage().contains("value 256.0 at flat index 1") && e.getMessage().contains("0..255"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Idx.encode(Idx.Type.INT, Tensor.of(new float[]{0.5f}, 1)));
    }

    @Test
    void labelsAbove255AreStoredAsInt() throws IOException {
        Path lab = dir.resolve("labels");
        Idx.writeLabels(lab, new int[]{1000, -1}, false);
        assertEquals(Idx.Type.INT, Idx.read(lab).type());
        assertArrayEquals(new int[]{1000, -1}, Idx.readLabels(lab));
    }

    private static CorruptFileException corrupt(byte[] bytes) {
        return assertThrows(CorruptFileException.class, () -> Idx.read(bytes, "bad-idx"));
    }

    private static void assertMentions(CorruptFileException e, String... parts) {
        assertTrue(e.getMessage().startsWith("bad-idx: "), e.getMessage());
        for (String p : parts) assertTrue(e.getMessage().contains(p), "'" + p + "' missing from: " + e.getMessage());
    }

    @Test
    void wrongMagicSaysWhatWasFoundAndExpected() {
        byte[] png = {(byte) 0x89, 'P', 'N', 'G', 0, 0, 0, 0};
        assertMentions(corrupt(png), "found magic 0x89504E47", "0x00000803", "0x00000801", "not an IDX file");
        assertMentions(corrupt(new byte[]{0, 0, 0x0A, 1, 0, 0, 0, 0}), "element type 0x0A", "0x08 ubyte");
        assertMentions(corrupt(new byte[]{0, 0, 8}), "3 bytes long", "too short");
    }

    @Test
    void truncatedDataSaysHowManyBytesWereExpectedAndFound() {
        byte[] full = Idx.encode(Idx.Type.UBYTE, images());
        assertMentions(corrupt(Arrays.copyOf(full, full.length - 10)), "(3, 4, 5) of UBYTE need 60 bytes", "only 50", "truncated");
        assertMentions(corrupt(Arrays.copyOf(full, 10)), "declares 3 dimensions", "after 6");
        byte[] gz = Idx.gzip(full);
        assertMentions(corrupt(Arrays.copyOf(gz, gz.length - 12)), "gzip data is corrupt or truncated");
        byte[] longer = Arrays.copyOf(full, full.length + 3);
        assertMentions(corrupt(longer), "3 bytes after the 60 data bytes");
    }

    @Test
    void absurdDimsAreRejectedBeforeAllocating() {
        ByteBuffer b = ByteBuffer.allocate(16).putInt(0x00000803).putInt(60000).putInt(60000).putInt(60000);
        assertMentions(corrupt(b.array()), "(60000, 60000, 60000) of UBYTE describe more than", "corrupt");
        ByteBuffer neg = ByteBuffer.allocate(8).putInt(0x00000801).putInt(-5);
        assertMentions(corrupt(neg.array()), "dimension 0 is 4294967291");
        // Large but allowed dims with no data: reported as truncation, without allocating 1.5 GB.
        ByteBuffer big = ByteBuffer.allocate(12).putInt(0x00000802).putInt(40000).putInt(40000);
        assertMentions(corrupt(big.array()), "need 1600000000 bytes", "only 0");
    }

    @Test
    void emptyArrayWithHugeOtherDimsIsValid() throws CorruptFileException {
        // Found by IdxFuzzTest: a zero dim makes the data empty even when the other dims multiply past 2^63.
        ByteBuffer b = ByteBuffer.allocate(20).putInt(0x00000C04).putInt(2_000_000_000).putInt(2_000_000_000)
                .putInt(2_000_000_000).putInt(0);
        Idx.Data d = Idx.read(b.array(), "empty");
        assertEquals(0, d.numel());
        assertArrayEquals(new int[]{2_000_000_000, 2_000_000_000, 2_000_000_000, 0}, d.toTensor().shape());
    }

    @Test
    void labelsReaderRejectsAnImagesFile() throws IOException {
        Path img = dir.resolve("train-images");
        Idx.write(img, Idx.Type.UBYTE, images(), true);
        var e = assertThrows(CorruptFileException.class, () -> Idx.readLabels(img));
        assertTrue(e.getMessage().contains("0x00000803") && e.getMessage().contains("labels file"), e.getMessage());
    }
}
