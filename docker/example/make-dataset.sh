#!/bin/sh
# Writes a small sample dataset into DIR: train/ (File), images/ (FastFile) and
# records/ (Pipe), mixed sizes, one empty object.
set -eu
dir=${1:?usage: make-dataset.sh DIR}
mkdir -p "$dir/train/shard-a" "$dir/train/shard-b" "$dir/images/cat" "$dir/images/dog" "$dir/records"
i=0
while [ "$i" -lt 16 ]; do
    sub=shard-a
    [ $((i % 2)) -eq 1 ] && sub=shard-b
    head -c $((i * 40000 + 1)) /dev/urandom > "$dir/train/$sub/part-$i.bin"
    head -c $((i * 3000)) /dev/urandom > "$dir/records/rec-$i.bin"
    i=$((i + 1))
done
for animal in cat dog; do
    for n in 1 2 3; do
        head -c $((n * 250000)) /dev/urandom > "$dir/images/$animal/$n.jpg"
    done
done
: > "$dir/images/empty.jpg"
