#!/bin/sh
# A stand-in training script: reads each channel the way a SageMaker script does,
# with plain tools, and prints what it got.
set -eu
echo "host $SM_CURRENT_HOST of $SM_HOSTS; channels $SM_CHANNELS"
echo "config: $(cat "$SM_INPUT_CONFIG_DIR/inputdataconfig.json" | tr -d ' \n')"
echo "job ${TRAINING_JOB_NAME:-}; hyperparameters ${SM_HPS:-none}"

count_bytes() { find "$1/" -type f -exec cat {} + | wc -c; }

echo "train (File, this host's shard): $(find "$SM_CHANNEL_TRAIN/" -type f | wc -l) files, $(count_bytes "$SM_CHANNEL_TRAIN") bytes"
echo "images (FastFile, read on demand): $(find "$SM_CHANNEL_IMAGES/" -type f | wc -l) files, $(count_bytes "$SM_CHANNEL_IMAGES") bytes"
for epoch in 0 1; do
    fifo="$SM_INPUT_DIR/data/records_$epoch"
    while [ ! -p "$fifo" ]; do sleep 0.1; done
    echo "records (Pipe, RecordIO) epoch $epoch: $(wc -c < "$fifo") bytes"
done
# What a job leaves: a checkpoint (synced to CheckpointConfig.S3Uri while the job
# runs, when one is configured) and the model (uploaded as model.tar.gz after a
# successful exit, when an output path is configured).
ckpt=/opt/ml/checkpoints
if [ -d "$ckpt" ] && [ -w "$ckpt" ]; then
    echo "epoch 2" > "$ckpt/.epoch-2.partial" && mv "$ckpt/.epoch-2.partial" "$ckpt/epoch-2.txt"
fi
if [ -n "${SM_MODEL_DIR:-}" ] && [ -d "$SM_MODEL_DIR" ]; then
    echo "weights" > "$SM_MODEL_DIR/model.txt"
fi
echo "training done"
