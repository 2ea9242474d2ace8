/**
 * Stage 2 of BiFlow: the learned 1-NFE backward model G ({@link dev.biflow.flow.backward.BiFlowModel}),
 * its configuration and ablation switches ({@link dev.biflow.flow.backward.BackwardConfig}), training
 * against a frozen forward flow ({@link dev.biflow.flow.backward.BackwardTrainer}), checkpoints, and
 * sampling including the exact-inverse baseline and noise-space inpainting
 * ({@link dev.biflow.flow.backward.BiFlowSampler}).
 */
package dev.biflow.flow.backward;
