/**
 * Layers with PyTorch-compatible parameter names: {@link dev.biflow.engine.nn.Module} (named parameters,
 * buffers, children; state dicts), {@link dev.biflow.engine.nn.Linear}, {@link dev.biflow.engine.nn.LayerNorm},
 * {@link dev.biflow.engine.nn.Embedding}, {@link dev.biflow.engine.nn.Conv2d},
 * {@link dev.biflow.engine.nn.MultiHeadAttention} with its {@link dev.biflow.engine.nn.KVCache},
 * {@link dev.biflow.engine.nn.MLP}, {@link dev.biflow.engine.nn.Sequential}, {@link dev.biflow.engine.nn.ModuleList},
 * and the initialisers in {@link dev.biflow.engine.nn.Init}. Attention and MLP reproduce ml-tarflow's modules
 * (pre-norm inside, [q | k | v] column layout), so its checkpoints load by name.
 */
package dev.biflow.engine.nn;
