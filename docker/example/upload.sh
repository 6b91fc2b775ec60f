#!/bin/sh
# The compose upload job: make the sample dataset and copy it to s3://datasets/.
set -eu
tmp=$(mktemp -d)
sh /example/make-dataset.sh "$tmp"
aws s3 cp --recursive --only-show-errors "$tmp/" s3://datasets/
echo "uploaded $(find "$tmp" -type f | wc -l) objects to s3://datasets/"
