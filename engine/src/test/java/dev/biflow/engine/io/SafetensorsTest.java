// Safetensors: bit-exact round trips, half-precision decoding, a PyTorch-written file, and every corruption the reader names.
package dev.biflow.engine.io;

import dev.biflow.engine.Tensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.quicktheories.core.Gen;
import org.quicktheories.generators.Generate;

import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.*;
import static org.quicktheories.QuickTheory.qt;
import static org.quicktheories.generators.SourceDSL.integers;
import static org.quicktheories.generators.SourceDSL.lists;

class SafetensorsTest {
    @TempDir Path dir;

    static Path resource(String name) {
        try {
            return Path.of(SafetensorsTest.class.getResource("/io/" + name).toURI());
        } catch (URISyntaxException e) {
            throw new IllegalStateException(e);
        }
    }

    // ---------------------------------------------------------------- round trips

    /** Float bit patterns that must survive untouched: NaNs with payloads, -0.0, subnormals, infinities. */
    private static final int[] SPECIAL_BITS = {
            0x7FC00000, 0x7FC00001, 0xFFC12345, 0x7F800001, 0x7FBFFFFF, // quiet and signalling NaNs with payloads
            0x80000000, 0x00000000, 0x00000001, 0x807FFFFF, 0x00400000, // signed zeros, subnormals
            0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x3F800000};

    private static final String[] NAME_PARTS = {"w", "layer.0", ".", "_", "\"", "\\", "\n", "é", "漢", "😀", "/", " ", "bias"};

    private record Spec(String name, int[] shape, int[] bits) {}

    private static Gen<Spec> specs() {
        Gen<String> names = lists().of(Generate.pick(Arrays.asList(NAME_PARTS))).ofSizeBetween(0, 4).map(l -> String.join("", l));
        Gen<int[]> shapes = Generate.intArrays(integers().between(0, 4), integers().between(0, 4));
        Gen<Integer> bitPattern = Generate.oneOf(integers().all(),
                Generate.pick(Arrays.stream(SPECIAL_BITS).boxed().toList()));
        return names.zip(shapes, integers().all(), (name, shape, seed) -> {
            int n = Arrays.stream(shape).reduce(1, (a, b) -> a * b);
            int[] bits = new int[n];
            java.util.SplittableRandom r = new java.util.SplittableRandom(seed);
            for (int i = 0; i < n; i++)
                bits[i] = r.nextInt(3) == 0 ? SPECIAL_BITS[r.nextInt(SPECIAL_BITS.length)] : r.nextInt();
            return new Spec(name, shape, bits);
        }).describedAs(s -> "'" + s.name + "' " + Arrays.toString(s.shape));
    }

    /** F16 storage: every value within half a unit in the last place of F16 (round to nearest), huge values refused. */
    @Test
    void halfPrecisionRoundTripAndRangeCheck(@org.junit.jupiter.api.io.TempDir Path tmp) throws Exception {
        float[] v = new float[1000];
        dev.biflow.engine.Rng r = new dev.biflow.engine.Rng(5);
        for (int i = 0; i < v.length; i++) v[i] = (float) (r.nextGaussian() * Math.pow(10, (i % 7) - 4));
        v[0] = 0f; v[1] = -0f; v[2] = 65504f; v[3] = 1e-9f; // zero, negative zero, F16 max, flushes to 0
        Path p = tmp.resolve("half.safetensors");
        Safetensors.builder().f16("w", Tensor.of(v, 10, 100)).metadata("k", "v").write(p);
        Safetensors.Contents c = Safetensors.read(p);
        assertEquals(Safetensors.Dtype.F16, c.header().tensor("w").dtype());
        assertEquals(8 + c.header().headerLength() + 2L * v.length, java.nio.file.Files.size(p), "two bytes per value");
        float[] back = c.tensor("w").data();
        for (int i = 0; i < v.length; i++) {
            // round to nearest: within half an F16 ulp (2^-11 relative where F16 is normal, 2^-25 below)
            float halfUlp = Math.max(Math.abs(v[i]) * 0x1p-11f, 0x1p-25f);
            assertEquals(v[i], back[i], halfUlp, "value " + i);
            assertEquals(Float.float16ToFloat(Float.floatToFloat16(v[i])), back[i], 0f, "nearest F16 " + i);
        }
        assertEquals("v", c.metadata().get("k"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Safetensors.builder().f16("big", Tensor.of(new float[]{1f, 70000f}, 2)));
        assertTrue(e.getMessage().contains("F16 range") && e.getMessage().contains("big"), e.getMessage());
    }

    @Test
    void roundTripIsBitExactForAnyShapesNamesAndBitPatterns() {
        qt().withExamples(200).forAll(lists().of(specs()).ofSizeBetween(0, 6),
                        lists().of(Generate.pick(Arrays.asList(NAME_PARTS))).ofSizeBetween(0, 3))
                .checkAssert((specs, metaParts) -> {
                    LinkedHashMap<String, Tensor> in = new LinkedHashMap<>();
                    for (Spec s : specs) {
                        float[] d = new float[s.bits.length];
                        for (int i = 0; i < d.length; i++) d[i] = Float.intBitsToFloat(s.bits[i]);
                        in.putIfAbsent(s.name, Tensor.of(d, s.shape));
                    }
                    Map<String, String> meta = new LinkedHashMap<>();
                    for (String p : metaParts) meta.put("k" + p, "v" + p + p);
                    byte[] bytes = Safetensors.toBytes(in, meta);
                    Safetensors.Contents out;
                    try {
                        out = Safetensors.read(bytes, "generated");
                    } catch (CorruptFileException e) {
                        throw new AssertionError(e);
                    }
                    assertEquals(new ArrayList<>(in.keySet()), new ArrayList<>(out.tensors().keySet()), "names in insertion order");
                    for (var e : in.entrySet()) {
                        Tensor a = e.getValue(), b = out.tensor(e.getKey());
                        assertArrayEquals(a.shape(), b.shape());
                        for (int i = 0; i < a.numel(); i++)
                            assertEquals(Float.floatToRawIntBits(a.data()[i]), Float.floatToRawIntBits(b.data()[i]),
                                    "bits of " + e.getKey() + "[" + i + "]");
                    }
                    assertEquals(meta, out.metadata());
                    assertEquals(0, (8 + out.header().headerLength()) % 8, "data buffer 8-byte aligned");
                });
    }

    @Test
    void fileRoundTripKeepsOrderValuesAndMetadata() throws IOException {
        LinkedHashMap<String, Tensor> in = new LinkedHashMap<>();
        in.put("zeta", Tensor.of(new float[]{1, -0f, Float.NaN, Float.MIN_VALUE, Float.NEGATIVE_INFINITY, 7}, 2, 3));
        in.put("alpha", Tensor.of(new float[]{42}));
        in.put("empty", Tensor.of(new float[0], 0, 5));
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("config", "{\"channels\": 64}");
        meta.put("note", "äöü \"quoted\" \\ back\nslash\ttab");
        Path f = dir.resolve("ckpt.safetensors");
        Safetensors.write(f, in, meta);
        Safetensors.Contents c = Safetensors.read(f);
        assertEquals(List.of("zeta", "alpha", "empty"), new ArrayList<>(c.tensors().keySet()));
        assertArrayEquals(new int[]{2, 3}, c.tensor("zeta").shape());
        assertArrayEquals(new int[0], c.tensor("alpha").shape());
        assertArrayEquals(new int[]{0, 5}, c.tensor("empty").shape());
        for (int i = 0; i < 6; i++)
            assertEquals(Float.floatToRawIntBits(in.get("zeta").data()[i]), Float.floatToRawIntBits(c.tensor("zeta").data()[i]));
        assertEquals(42f, c.tensor("alpha").item());
        assertEquals(meta, c.metadata());
        // Overwriting an existing checkpoint works and leaves no temporary file behind.
        Safetensors.write(f, Map.of("only", Tensor.of(new float[]{3}, 1)), Map.of());
        assertEquals(List.of("only"), Safetensors.readHeader(f).names());
        try (var files = Files.list(dir)) {
            assertEquals(List.of(f), files.toList());
        }
    }

    @Test
    void headerIsPythonJsonFormattedAndSpacePaddedTo8Bytes() throws CorruptFileException {
        LinkedHashMap<String, Tensor> in = new LinkedHashMap<>();
        in.put("b", Tensor.of(new float[]{1, 2}, 2));
        in.put("a", Tensor.of(new float[]{3}, 1, 1));
        byte[] bytes = Safetensors.toBytes(in, Map.of("k", "v"));
        long n = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, n % 8);
        String header = new String(bytes, 8, (int) n, StandardCharsets.UTF_8);
        String json = "{\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
                + "\"a\": {\"dtype\": \"F32\", \"shape\": [1, 1], \"data_offsets\": [8, 12]}, \"__metadata__\": {\"k\": \"v\"}}";
        assertEquals(json, header.stripTrailing());
        assertTrue(header.substring(json.length()).chars().allMatch(ch -> ch == ' '));
        assertEquals(8 + n + 12, bytes.length);
        assertEquals(3f, Safetensors.read(bytes, "t").tensor("a").item());
    }

    // ---------------------------------------------------------------- a file written by PyTorch

    @Test
    void readsTheFileWrittenByPyTorchSafetensors() throws IOException {
        Path f = resource("torch-written.safetensors");
        Safetensors.Contents c = Safetensors.read(f);
        assertEquals(List.of("x", "y", "z", "logdet", "z_sample", "x_sample", "block_out.0", "block_out.1"),
                new ArrayList<>(c.tensors().keySet()));
        assertArrayEquals(new int[]{2, 1, 28, 28}, c.tensor("x").shape());
        assertArrayEquals(new int[]{2}, c.tensor("y").shape());
        assertArrayEquals(new int[]{2, 49, 16}, c.tensor("z").shape());
        assertArrayEquals(new int[]{2}, c.tensor("logdet").shape());
        assertArrayEquals(new int[]{2, 49, 16}, c.tensor("z_sample").shape());
        assertArrayEquals(new int[]{2, 1, 28, 28}, c.tensor("x_sample").shape());
        assertArrayEquals(new int[]{2, 49, 16}, c.tensor("block_out.0").shape());
        assertArrayEquals(new int[]{2, 49, 16}, c.tensor("block_out.1").shape());
        assertArrayEquals(new float[]{2, 8}, c.tensor("y").data(), "class labels");
        // Bit patterns read by numpy from the same file.
        assertEquals(0x3E6BC4DD, Float.floatToRawIntBits(c.tensor("x").data()[0]));
        assertEquals(0x3EE8A76B, Float.floatToRawIntBits(c.tensor("x").data()[1]));
        assertEquals(0xBE13FD5E, Float.floatToRawIntBits(c.tensor("logdet").data()[0]));
        assertEquals(0xBE280344, Float.floatToRawIntBits(c.tensor("logdet").data()[1]));
        // The last block's output is z itself.
        assertArrayEquals(c.tensor("z").data(), c.tensor("block_out.1").data());
        for (Tensor t : c.tensors().values())
            for (float v : t.data()) assertTrue(Float.isFinite(v));
        assertTrue(c.metadata().isEmpty());
        assertArrayEquals(c.tensor("z").data(), Safetensors.readTensor(f, "z").data());
    }

    @Test
    void rewritingThePyTorchFileReproducesItByteForByte() throws IOException {
        Path f = resource("torch-written.safetensors");
        Safetensors.Contents c = Safetensors.read(f);
        assertArrayEquals(Files.readAllBytes(f), Safetensors.toBytes(c.tensors(), c.metadata()));
    }

    // ---------------------------------------------------------------- dtypes

    /** A file with one tensor whose header and bytes are written out by hand. */
    static byte[] handMade(String dtype, String shape, byte[] data) {
        String json = "{\"t\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[0," + data.length + "]}}";
        return handMade(json, data);
    }

    static byte[] handMade(String json, byte[] data) {
        byte[] h = json.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).put(data);
        return b.array();
    }

    static byte[] le16(int... v) {
        ByteBuffer b = ByteBuffer.allocate(2 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int x : v) b.putShort((short) x);
        return b.array();
    }

    @Test
    void decodesFloat16AgainstKnownValues() throws CorruptFileException {
        byte[] f = handMade("F16", "[2, 4]", le16(0x3C00, 0xC000, 0x7BFF, 0x0001, 0x3555, 0x7C00, 0x8000, 0x7E00));
        float[] v = Safetensors.read(f, "f16").tensor("t").data();
        assertEquals(1f, v[0]);
        assertEquals(-2f, v[1]);
        assertEquals(65504f, v[2]); // largest half
        assertEquals(0x1p-24f, v[3]); // smallest subnormal half
        assertEquals(0.33325195f, v[4]); // nearest half to 1/3
        assertEquals(Float.POSITIVE_INFINITY, v[5]);
        assertEquals(0x80000000, Float.floatToRawIntBits(v[6])); // -0.0
        assertTrue(Float.isNaN(v[7]));
    }

    @Test
    void decodesBfloat16AgainstKnownValues() throws CorruptFileException {
        byte[] f = handMade("BF16", "[6]", le16(0x3F80, 0xC049, 0x7F7F, 0x0001, 0xFF80, 0x7FC1));
        float[] v = Safetensors.read(f, "bf16").tensor("t").data();
        assertEquals(1f, v[0]);
        assertEquals(-3.140625f, v[1]);
        assertEquals(Float.intBitsToFloat(0x7F7F0000), v[2]); // largest bfloat16, about 3.39e38
        assertEquals(0x1p-133f, v[3]); // smallest subnormal bfloat16
        assertEquals(Float.NEGATIVE_INFINITY, v[4]);
        assertEquals(0x7FC10000, Float.floatToRawIntBits(v[5])); // NaN payload kept
    }

    @Test
    void decodesOtherDtypesToFloat() throws IOException {
        ByteBuffer f64 = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putDouble(0.1).putDouble(-1e300);
        float[] v = Safetensors.read(handMade("F64", "[2]", f64.array()), "f64").tensor("t").data();
        assertArrayEquals(new float[]{0.1f, Float.NEGATIVE_INFINITY}, v);
        ByteBuffer i64 = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(-7).putLong(1L << 40);
        assertArrayEquals(new float[]{-7, 0x1p40f}, Safetensors.read(handMade("I64", "[2]", i64.array()), "i64").tensor("t").data());
        assertArrayEquals(new float[]{0, 255, 128}, Safetensors.read(handMade("U8", "[3]", new byte[]{0, -1, -128}), "u8").tensor("t").data());
        assertArrayEquals(new float[]{0, -1, -128}, Safetensors.read(handMade("I8", "[3]", new byte[]{0, -1, -128}), "i8").tensor("t").data());
        assertArrayEquals(new float[]{0, 1, 1}, Safetensors.read(handMade("BOOL", "[3]", new byte[]{0, 1, 1}), "b").tensor("t").data());
        assertArrayEquals(new float[]{65535, 0}, Safetensors.read(handMade("U16", "[2]", le16(0xFFFF, 0)), "u16").tensor("t").data());
        // float8: E4M3 0x38 = 1.0, 0x7E = 448 (max), 0x7F = NaN; E5M2 0x3C = 1.0, 0x7B = 57344 (max)
        float[] e4 = Safetensors.read(handMade("F8_E4M3", "[3]", new byte[]{0x38, 0x7E, 0x7F}), "e4m3").tensor("t").data();
        assertEquals(1f, e4[0]);
        assertEquals(448f, e4[1]);
        assertTrue(Float.isNaN(e4[2]));
        float[] e5 = Safetensors.read(handMade("F8_E5M2", "[2]", new byte[]{0x3C, 0x7B}), "e5m2").tensor("t").data();
        assertArrayEquals(new float[]{1f, 57344f}, e5);
    }

    @Test
    void builderWritesExactIntegersReadBackByReadLongs() throws IOException {
        Path f = dir.resolve("ints.safetensors");
        long big = (1L << 53) + 1; // not representable as float
        Safetensors.builder()
                .f32("w", new float[]{1.5f, 2.5f}, 2)
                .i64("step", new long[]{big}, 1)
                .i32("perm", new int[]{3, 1, 2, 0}, 2, 2)
                .metadata("format", "biflow")
                .write(f);
        Safetensors.Header h = Safetensors.readHeader(f);
        assertEquals(List.of("w", "step", "perm"), h.names());
        assertEquals(Safetensors.Dtype.I64, h.tensor("step").dtype());
        assertEquals(Safetensors.Dtype.I32, h.tensor("perm").dtype());
        assertArrayEquals(new long[]{big}, Safetensors.readLongs(f, "step"));
        assertArrayEquals(new long[]{3, 1, 2, 0}, Safetensors.readLongs(f, "perm"));
        assertArrayEquals(new float[]{3, 1, 2, 0}, Safetensors.read(f).tensor("perm").data());
        assertEquals("biflow", h.metadata().get("format"));
        var e = assertThrows(IllegalArgumentException.class, () -> Safetensors.readLongs(f, "w"));
        assertTrue(e.getMessage().contains("not an integer dtype"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> Safetensors.readTensor(f, "nope"));
        assertTrue(e.getMessage().contains("no tensor named 'nope'") && e.getMessage().contains("[w, step, perm]"), e.getMessage());
    }

    @Test
    void builderRejectsBadInput() {
        var b = Safetensors.builder().f32("a", new float[]{1}, 1);
        assertThrows(IllegalArgumentException.class, () -> b.f32("a", new float[]{1}, 1), "duplicate");
        assertThrows(IllegalArgumentException.class, () -> b.f32("__metadata__", new float[]{1}, 1), "reserved");
        assertThrows(IllegalArgumentException.class, () -> b.f32("c", new float[]{1, 2}, 3), "shape mismatch");
        assertThrows(IllegalArgumentException.class, () -> b.f32("\uD800", new float[]{1}, 1), "lone surrogate");
        assertThrows(IllegalArgumentException.class, () -> b.metadata("k", null), "null value");
    }

    // ---------------------------------------------------------------- corrupt files

    private static CorruptFileException corrupt(byte[] bytes) {
        return assertThrows(CorruptFileException.class, () -> Safetensors.read(bytes, "bad.safetensors"));
    }

    private static void assertMentions(CorruptFileException e, String... parts) {
        assertTrue(e.getMessage().startsWith("bad.safetensors: "), e.getMessage());
        for (String p : parts) assertTrue(e.getMessage().contains(p), "'" + p + "' missing from: " + e.getMessage());
    }

    private static byte[] valid() {
        return Safetensors.toBytes(Map.of("w", Tensor.of(new float[]{1, 2, 3, 4}, 2, 2)), Map.of());
    }

    @Test
    void fileShorterThanTheLengthPrefix() {
        assertMentions(corrupt(new byte[5]), "5 bytes long", "8-byte header-length prefix");
        assertMentions(corrupt(new byte[0]), "0 bytes long");
    }

    @Test
    void truncatedHeader() {
        byte[] v = valid();
        assertMentions(corrupt(Arrays.copyOf(v, 20)), "only 12 bytes follow", "truncated");
    }

    @Test
    void absurdHeaderLength() {
        byte[] v = valid();
        ByteBuffer.wrap(v).order(ByteOrder.LITTLE_ENDIAN).putLong(0, 1L << 40);
        assertMentions(corrupt(v), "1099511627776 bytes", "limit", "not a safetensors file");
        ByteBuffer.wrap(v).order(ByteOrder.LITTLE_ENDIAN).putLong(0, -1);
        assertMentions(corrupt(v), "18446744073709551615 bytes");
    }

    @Test
    void truncatedData() {
        byte[] v = valid();
        assertMentions(corrupt(Arrays.copyOf(v, v.length - 1)), "data_offsets [0, 16] out of range", "buffer has 15 bytes", "truncated");
    }

    @Test
    void headerThatIsNotJson() {
        assertMentions(corrupt(handMade("{\"w\": {\"dtype\": ", new byte[0])), "not valid JSON");
        assertMentions(corrupt(handMade("[1, 2, 3]", new byte[0])), "an array", "expected a JSON object");
        assertMentions(corrupt(handMade("{} trailing", new byte[0])), "not valid JSON");
        byte[] badUtf8 = handMade("{\"x\": 1}", new byte[0]);
        badUtf8[10] = (byte) 0xC3;
        assertMentions(corrupt(badUtf8), "not valid UTF-8");
    }

    @Test
    void unknownDtype() {
        assertMentions(corrupt(handMade("C64", "[1]", new byte[8])), "dtype \"C64\"", "does not support", "BF16");
        assertMentions(corrupt(handMade("{\"t\": {\"dtype\": 4, \"shape\": [], \"data_offsets\": [0, 4]}}", new byte[4])),
                "dtype the number 4");
    }

    @Test
    void shapeAndOffsetsThatDisagree() {
        assertMentions(corrupt(handMade("F32", "[3]", new byte[8])), "shape (3) of F32", "span 8 bytes", "disagree");
        assertMentions(corrupt(handMade("F32", "[-1]", new byte[4])), "dimension 0 = the number -1");
        assertMentions(corrupt(handMade("F32", "[1.5]", new byte[4])), "dimension 0 = the number 1.5");
        assertMentions(corrupt(handMade("F32", "[2147483647, 2147483647, 2147483647]", new byte[4])), "disagree");
        assertMentions(corrupt(handMade("{\"t\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", new byte[4])),
                "end before begin");
        assertMentions(corrupt(handMade("{\"t\": {\"dtype\": \"F32\", \"shape\": [1]}}", new byte[4])), "data_offsets missing");
    }

    @Test
    void overlappingOffsets() {
        String json = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                + " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}";
        assertMentions(corrupt(handMade(json, new byte[12])), "'a' [0, 8)", "'b' [4, 12)", "overlap");
    }

    @Test
    void duplicateNames() {
        String json = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                + " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}";
        assertMentions(corrupt(handMade(json, new byte[8])), "lists a name twice", "'a'");
    }

    @Test
    void metadataThatIsNotStrings() {
        String json = "{\"__metadata__\": {\"epoch\": 3}}";
        assertMentions(corrupt(handMade(json, new byte[0])), "metadata value for key 'epoch'", "strings to strings");
    }

    @Test
    void corruptFileOnDiskNamesThePath() throws IOException {
        Path f = dir.resolve("broken.safetensors");
        Files.write(f, new byte[]{1, 2, 3});
        var e = assertThrows(CorruptFileException.class, () -> Safetensors.read(f));
        assertTrue(e.getMessage().startsWith(f.toString() + ": "), e.getMessage());
        assertEquals(f.toString(), e.source());
    }
}
