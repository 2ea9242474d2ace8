/**
 * Stage 2 of BiFlow: the learned inverse, G (the paper's "backward model"; the package is not named
 * after it so that it does not read like autograd's backward pass), a 1-NFE model G ({@link dev.biflow.flow.inverse.BiFlowModel}),
 * its configuration and ablation switches ({@link dev.biflow.flow.inverse.BackwardConfig}), training
 * against a frozen forward flow ({@link dev.biflow.flow.inverse.BackwardTrainer}), checkpoints, and
 * sampling including the exact-inverse baseline and noise-space inpainting
 * ({@link dev.biflow.flow.inverse.BiFlowSampler}).
 */
package dev.biflow.flow.inverse;
