/**
 * File formats: safetensors checkpoints ({@link dev.biflow.engine.io.Safetensors}), IDX datasets such as
 * MNIST ({@link dev.biflow.engine.io.Idx}), PNG sample grids ({@link dev.biflow.engine.io.ImageGrid}).
 * Readers throw {@link dev.biflow.engine.io.CorruptFileException} for bad bytes; writers go through
 * {@link dev.biflow.engine.io.AtomicWrite} so a crash never leaves a half-written file.
 */
package dev.biflow.engine.io;
