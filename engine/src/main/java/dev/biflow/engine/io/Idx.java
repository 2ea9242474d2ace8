// IDX, the MNIST / Fashion-MNIST dataset format: big-endian magic and dims, then raw values; read plain or gzipped.
package dev.biflow.engine.io;

import dev.biflow.engine.Shape;
import dev.biflow.engine.Tensor;

import java.io.BufferedInputStream;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.zip.GZIPInputStream;
import java.util.zip.GZIPOutputStream;
import java.util.zip.ZipException;

/**
 * Reads and writes IDX files (<a href="http://yann.lecun.com/exdb/mnist/">the MNIST format</a>).
 *
 * <p>Layout: a big-endian magic {@code 0x0000TTNN} (two zero bytes, element type TT, number of
 * dimensions NN), NN big-endian int32 sizes, then the values row-major, big-endian. MNIST
 * images are {@code 0x00000803} (ubyte, 3 dims: n, rows, cols), labels {@code 0x00000801}.
 *
 * <p>Gzipped files are recognised by their magic bytes ({@code 1f 8b}), not their name.
 * Malformed input (wrong magic, truncated or trailing data, absurd dims, corrupt gzip) is a
 * {@link CorruptFileException}; nothing else escapes the reader and it never allocates more
 * than the data actually present (fuzzed by {@code IdxFuzzTest}).
 */
public final class Idx {
    private Idx() {}

    /** Largest payload accepted, in bytes (it must fit a Java array). */
    public static final int MAX_BYTES = Integer.MAX_VALUE - 8;

    /** Element types and their codes in the magic number. */
    public enum Type {
        UBYTE(0x08, 1), BYTE(0x09, 1), SHORT(0x0B, 2), INT(0x0C, 4), FLOAT(0x0D, 4), DOUBLE(0x0E, 8);

        private final int code, size;

        Type(int code, int size) {
            this.code = code;
            this.size = size;
        }

        public int code() { return code; }

        public int size() { return size; }

        public boolean isInteger() { return this != FLOAT && this != DOUBLE; }

        /** The type with this code, or null. */
        public static Type ofCode(int code) {
            for (Type t : values()) if (t.code == code) return t;
            return null;
        }
    }

    private static final String KNOWN_TYPES = "0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double";

    /** A decoded file: element type, dimensions, and the values as stored (big-endian). */
    public record Data(Type type, int[] dims, byte[] raw) {
        public Data {
            dims = dims.clone();
            Shape.checkValid(dims);
            // Any zero dim empties the array, however large the others (Shape.numelChecked would object).
            long need = type.size;
            for (int d : dims) need = d == 0 || need == 0 ? 0 : Math.min(need * d, 1L << 40);
            if (raw.length != need)
                throw new IllegalArgumentException(raw.length + " bytes do not match dims " + Shape.str(dims) + " of " + type
                        + " (" + need + " bytes)");
        }

        @Override public int[] dims() { return dims.clone(); }

        /** The 32-bit magic number this data has in a file. */
        public int magic() { return (type.code << 8) | dims.length; }

        public int numel() { return raw.length / type.size; }

        /** The values as float32 (ubyte 0..255, byte -128..127, ...), shaped by the dims. */
        public Tensor toTensor() {
            int n = numel();
            float[] out = new float[n];
            ByteBuffer b = ByteBuffer.wrap(raw); // big-endian by default, as IDX is
            switch (type) {
                case UBYTE -> { for (int i = 0; i < n; i++) out[i] = raw[i] & 0xFF; }
                case BYTE -> { for (int i = 0; i < n; i++) out[i] = raw[i]; }
                case SHORT -> { for (int i = 0; i < n; i++) out[i] = b.getShort(); }
                case INT -> { for (int i = 0; i < n; i++) out[i] = b.getInt(); }
                case FLOAT -> b.asFloatBuffer().get(out);
                case DOUBLE -> { for (int i = 0; i < n; i++) out[i] = (float) b.getDouble(); }
            }
            return Tensor.of(out, dims);
        }

        /** The exact values of an integer-typed file, flattened. */
        public int[] toInts() {
            if (!type.isInteger())
                throw new IllegalArgumentException("toInts: the data is " + type + "; use toTensor() for floating-point IDX data");
            int n = numel();
            int[] out = new int[n];
            ByteBuffer b = ByteBuffer.wrap(raw);
            switch (type) {
                case UBYTE -> { for (int i = 0; i < n; i++) out[i] = raw[i] & 0xFF; }
                case BYTE -> { for (int i = 0; i < n; i++) out[i] = raw[i]; }
                case SHORT -> { for (int i = 0; i < n; i++) out[i] = b.getShort(); }
                case INT -> b.asIntBuffer().get(out);
                default -> throw new AssertionError(type);
            }
            return out;
        }

        @Override public String toString() {
            return String.format("IDX 0x%08X %s%s", magic(), type, Shape.str(dims));
        }
    }

    // ================================================================ reading

    public static Data read(Path path) throws IOException {
        try (InputStream in = Files.newInputStream(path)) {
            return read(in, path.toString());
        }
    }

    /** Parses in-memory bytes (plain or gzipped); {@code source} labels them in error messages. */
    public static Data read(byte[] bytes, String source) throws CorruptFileException {
        try {
            return read(new ByteArrayInputStream(bytes), source);
        } catch (CorruptFileException e) {
            throw e;
        } catch (IOException e) {
            throw new UncheckedIOException("in-memory read failed", e); // unreachable: every data error is wrapped
        }
    }

    /** Parses a stream (plain or gzipped) to its end. The stream is not closed. */
    public static Data read(InputStream stream, String source) throws IOException {
        BufferedInputStream in = new BufferedInputStream(stream);
        in.mark(2);
        boolean gzip = in.read() == 0x1F && in.read() == 0x8B;
        in.reset();
        if (!gzip) return parse(in, source);
        try {
            return parse(new GZIPInputStream(in, 1 << 16), source);
        } catch (ZipException | EOFException e) {
            throw new CorruptFileException(source, "the gzip data is corrupt or truncated (" + e.getMessage()
                    + "); re-download the file (`gzip -t` checks it)", e);
        }
    }

    /** A file's values as float32, shaped by its dims (MNIST images: (n, 28, 28), values 0..255). */
    public static Tensor readTensor(Path path) throws IOException {
        return read(path).toTensor();
    }

    /** A 1-D integer file's values (MNIST labels: 0..9). */
    public static int[] readLabels(Path path) throws IOException {
        Data d = read(path);
        if (d.dims.length != 1 || !d.type.isInteger())
            throw new CorruptFileException(path.toString(), String.format("expected a 1-D integer label file (MNIST labels have"
                    + " magic 0x00000801) but found magic 0x%08X, %s with dims %s; pass the labels file (e.g."
                    + " train-labels-idx1-ubyte.gz), not the images", d.magic(), d.type, Shape.str(d.dims)));
        return d.toInts();
    }

    private static Data parse(InputStream in, String src) throws IOException {
        byte[] head = readUpTo(in, 4);
        if (head.length < 4)
            throw new CorruptFileException(src, "the file is " + head.length + " bytes long, too short for the 4-byte IDX magic"
                    + " number; it is empty or truncated (re-download it)");
        int magic = ByteBuffer.wrap(head).getInt();
        if ((magic >>> 16) != 0)
            throw new CorruptFileException(src, String.format("found magic 0x%08X, expected an IDX magic 0x0000TTNN (two zero bytes,"
                    + " a type byte, a dimension count; MNIST images are 0x00000803, labels 0x00000801); this is not an IDX"
                    + " file", magic));
        Type type = Type.ofCode((magic >> 8) & 0xFF);
        if (type == null)
            throw new CorruptFileException(src, String.format("magic 0x%08X has element type 0x%02X, expected one of %s;"
                    + " this is not an IDX file or it is corrupt", magic, (magic >> 8) & 0xFF, KNOWN_TYPES));
        int ndim = magic & 0xFF;
        byte[] dimBytes = readUpTo(in, 4 * ndim);
        if (dimBytes.length < 4 * ndim)
            throw new CorruptFileException(src, String.format("magic 0x%08X declares %d dimensions (%d bytes of sizes) but the"
                    + " file ends after %d of them; it is truncated (re-download it)", magic, ndim, 4 * ndim, dimBytes.length));
        int[] dims = new int[ndim];
        ByteBuffer db = ByteBuffer.wrap(dimBytes);
        long bytes = type.size;
        boolean empty = false;
        for (int i = 0; i < ndim; i++) {
            dims[i] = db.getInt();
            if (dims[i] < 0)
                throw new CorruptFileException(src, "dimension " + i + " is " + Integer.toUnsignedString(dims[i])
                        + ", more than 2^31 - 1; the header is corrupt");
            if (dims[i] == 0) empty = true;
            else if (bytes <= MAX_BYTES) bytes *= dims[i]; // < 2^31 * 2^31: no overflow; stops once too big
        }
        if (empty) bytes = 0;
        if (bytes > MAX_BYTES)
            throw new CorruptFileException(src, "dims " + Shape.str(dims) + " of " + type + " describe more than " + MAX_BYTES
                    + " bytes of data, more than this reader supports; the header is corrupt (or split the dataset)");
        // the raw bytes and their expansion to float32 (or int) values, which every caller makes; over the
        // budget, the data is counted first (streamed, not kept): a truncated file is reported as truncated
        long need = bytes + bytes / type.size * 4;
        if (!MemoryBudget.fits(need)) {
            long have = countUpTo(in, bytes);
            if (have < bytes) throw truncated(src, dims, type, bytes, have);
            MemoryBudget.check(src, "IDX data " + Shape.str(dims) + " of " + type + " (" + MemoryBudget.size(bytes) + " on disk"
                    + (src.endsWith(".gz") ? " after decompression" : "") + ", 4 bytes per value in memory)", need);
        }
        byte[] raw = readUpTo(in, (int) bytes);
        if (raw.length < bytes) throw truncated(src, dims, type, bytes, raw.length);
        if (in.read() != -1) {
            long extra = 1 + in.transferTo(OutputStream.nullOutputStream());
            throw new CorruptFileException(src, "the file has " + extra + " bytes after the " + bytes + " data bytes that dims "
                    + Shape.str(dims) + " of " + type + " declare; the header or the file is wrong");
        }
        return new Data(type, dims, raw);
    }

    /** Reads and drops up to n bytes; how many there were. */
    private static long countUpTo(InputStream in, long n) throws IOException {
        byte[] buf = new byte[1 << 16];
        long got = 0;
        while (got < n) {
            int r = in.read(buf, 0, (int) Math.min(buf.length, n - got));
            if (r < 0) break;
            got += r;
        }
        return got;
    }

    private static CorruptFileException truncated(String src, int[] dims, Type type, long bytes, long have) {
        return new CorruptFileException(src, "dims " + Shape.str(dims) + " of " + type + " need " + bytes + " bytes of data"
                + " but the file has only " + have + "; it is truncated (an interrupted download? re-download it)");
    }

    /**
     * Up to n bytes, fewer at end of stream. Grows in chunks so that a header declaring a huge
     * size costs memory only for the bytes really there.
     */
    private static byte[] readUpTo(InputStream in, int n) throws IOException {
        final int chunk = 1 << 20;
        if (n <= chunk) {
            byte[] b = new byte[n];
            int got = in.readNBytes(b, 0, n);
            return got == n ? b : Arrays.copyOf(b, got);
        }
        List<byte[]> parts = new ArrayList<>();
        int total = 0;
        while (total < n) {
            byte[] b = new byte[Math.min(chunk, n - total)];
            int got = in.readNBytes(b, 0, b.length);
            parts.add(got == b.length ? b : Arrays.copyOf(b, got));
            total += got;
            if (got < b.length) break;
        }
        byte[] out = new byte[total];
        int pos = 0;
        for (byte[] p : parts) {
            System.arraycopy(p, 0, out, pos, p.length);
            pos += p.length;
        }
        return out;
    }

    // ================================================================ writing

    /**
     * The IDX bytes for {@code values} stored as {@code type}, dims from its shape. Integer
     * types need integral values in the type's range; anything else is an error naming the index.
     */
    public static byte[] encode(Type type, Tensor values) {
        int[] dims = values.shape();
        if (dims.length > 255)
            throw new IllegalArgumentException("IDX holds at most 255 dimensions, the tensor has " + dims.length);
        float[] v = values.data();
        long total = 4L + 4L * dims.length + (long) v.length * type.size;
        if (total > MAX_BYTES) throw new IllegalArgumentException("IDX data of " + total + " bytes is too large for one file");
        ByteBuffer b = ByteBuffer.allocate((int) total);
        b.putInt((type.code << 8) | dims.length);
        for (int d : dims) b.putInt(d);
        for (int i = 0; i < v.length; i++) {
            float x = v[i];
            switch (type) {
                case UBYTE -> b.put((byte) checkInt(x, i, 0, 255, type));
                case BYTE -> b.put((byte) checkInt(x, i, -128, 127, type));
                case SHORT -> b.putShort((short) checkInt(x, i, Short.MIN_VALUE, Short.MAX_VALUE, type));
                case INT -> b.putInt(checkInt(x, i, -(1L << 31), (1L << 31) - 1, type));
                case FLOAT -> b.putFloat(x);
                case DOUBLE -> b.putDouble(x);
            }
        }
        return b.array();
    }

    private static int checkInt(float x, int i, long lo, long hi, Type type) {
        if (x != Math.rint(x) || x < lo || x > hi)
            throw new IllegalArgumentException("value " + x + " at flat index " + i + " does not fit IDX " + type
                    + " (integers " + lo + ".." + hi + "); round/clamp it or pick another type");
        return (int) x;
    }

    /** Writes {@code values} as an IDX file (gzipped if asked), atomically. */
    public static void write(Path path, Type type, Tensor values, boolean gzip) throws IOException {
        writeBytes(path, encode(type, values), gzip);
    }

    /** Writes labels as a 1-D file: ubyte when all are in 0..255 (as MNIST), int otherwise. */
    public static void writeLabels(Path path, int[] labels, boolean gzip) throws IOException {
        boolean ubyte = Arrays.stream(labels).allMatch(l -> l >= 0 && l <= 255);
        Type type = ubyte ? Type.UBYTE : Type.INT;
        ByteBuffer b = ByteBuffer.allocate(8 + labels.length * type.size);
        b.putInt((type.code << 8) | 1).putInt(labels.length);
        for (int l : labels) {
            if (ubyte) b.put((byte) l);
            else b.putInt(l);
        }
        writeBytes(path, b.array(), gzip);
    }

    private static void writeBytes(Path path, byte[] bytes, boolean gzip) throws IOException {
        AtomicWrite.write(path, out -> {
            if (gzip) {
                try (GZIPOutputStream gz = new GZIPOutputStream(out, 1 << 16)) {
                    gz.write(bytes);
                }
            } else {
                out.write(bytes);
            }
        });
    }

    /** Gzips bytes in memory (handy for tests and fixtures). */
    public static byte[] gzip(byte[] bytes) {
        ByteArrayOutputStream bo = new ByteArrayOutputStream();
        try (GZIPOutputStream gz = new GZIPOutputStream(bo)) {
            gz.write(bytes);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bo.toByteArray();
    }
}
