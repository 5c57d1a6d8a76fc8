"""Dataset readers on tiny layouts built on disk from real crops of the Motorcycle pair."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from pfm_files import write_pfm
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from stereo_adapt_ros.data import (
    CsvPairs,
    KittiRawDrive,
    KittiStereo,
    MiddleburyScenes,
    RosbagStereo,
    StereoSample,
    encode_image,
    motorcycle_pan,
    open_dataset,
    read_pfm,
    write_kitti_disparity,
)
from stereo_adapt_ros.data.bag import BAG_PAIR_TOLERANCE_S

HEIGHT, WIDTH = 24, 40


@pytest.fixture(scope="module")
def motorcycle():
    left, right, disparity = skimage.data.stereo_motorcycle()
    return left, right, np.where(np.isfinite(disparity), disparity, np.nan).astype(np.float32)


def crop(motorcycle, index):
    """A small real stereo pair with ground truth; different ``index`` gives another window.

    Every window has some pixels without ground truth (NaN).
    """
    left, right, disparity = motorcycle
    rows = slice(150 + 10 * index, 150 + 10 * index + HEIGHT)
    columns = slice(200 + 30 * index, 200 + 30 * index + WIDTH)
    return left[rows, columns], right[rows, columns], disparity[rows, columns].copy()


def write_rgb(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def assert_sample(sample, left, right, disparity, name):
    assert isinstance(sample, StereoSample) and sample.name == name
    np.testing.assert_array_equal(sample.left, left)
    np.testing.assert_array_equal(sample.right, right)
    if disparity is None:
        assert sample.disparity is None
    else:
        assert sample.disparity.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(sample.disparity), np.isnan(disparity))
        np.testing.assert_allclose(sample.disparity, disparity, atol=1 / 512 + 1e-4)


def make_kitti_2015(root, motorcycle, ground_truth=True):
    for index in range(2):
        left, right, disparity = crop(motorcycle, index)
        write_rgb(root / "image_2" / f"00000{index}_10.png", left)
        write_rgb(root / "image_3" / f"00000{index}_10.png", right)
        write_rgb(root / "image_2" / f"00000{index}_11.png", right)  # not a _10 frame: skipped
        if ground_truth:
            (root / "disp_occ_0").mkdir(exist_ok=True)
            write_kitti_disparity(root / "disp_occ_0" / f"00000{index}_10.png", disparity)
    return root


def test_kitti_2015_reads_10_frames_with_ground_truth(tmp_path, motorcycle):
    dataset = KittiStereo(make_kitti_2015(tmp_path, motorcycle))
    assert len(dataset) == 2
    for index, sample in enumerate(dataset):
        assert_sample(sample, *crop(motorcycle, index), f"00000{index}_10")
    assert dataset[-1].name == "000001_10"
    with pytest.raises(IndexError):
        dataset[2]
    # No noc folder here: samples come without ground truth.
    assert KittiStereo(tmp_path, gt="noc")[0].disparity is None


def test_kitti_testing_split_has_no_ground_truth(tmp_path, motorcycle):
    dataset = KittiStereo(make_kitti_2015(tmp_path, motorcycle, ground_truth=False))
    assert [sample.disparity for sample in dataset] == [None, None]


def test_kitti_2012_layout(tmp_path, motorcycle):
    left, right, disparity = crop(motorcycle, 0)
    write_rgb(tmp_path / "colored_0" / "000000_10.png", left)
    write_rgb(tmp_path / "colored_1" / "000000_10.png", right)
    (tmp_path / "disp_noc").mkdir()
    write_kitti_disparity(tmp_path / "disp_noc" / "000000_10.png", disparity)
    dataset = KittiStereo(tmp_path, gt="noc")
    assert len(dataset) == 1
    assert_sample(dataset[0], left, right, disparity, "000000_10")
    with pytest.raises(ValueError, match="'occ' or 'noc'"):
        KittiStereo(tmp_path, gt="all")


def test_mismatched_image_sizes_name_the_file_and_both_shapes(tmp_path, motorcycle):
    left, right, _ = crop(motorcycle, 0)
    write_rgb(tmp_path / "image_2" / "000000_10.png", left)
    write_rgb(tmp_path / "image_3" / "000000_10.png", right[:, :-4])
    dataset = KittiStereo(tmp_path)
    with pytest.raises(ValueError, match=r"000000_10\.png.*\(24, 40, 3\).*\(24, 36, 3\)"):
        dataset[0]


def test_ground_truth_of_wrong_size_is_rejected(tmp_path, motorcycle):
    left, right, disparity = crop(motorcycle, 0)
    write_rgb(tmp_path / "scene" / "im0.png", left)
    write_rgb(tmp_path / "scene" / "im1.png", right)
    write_pfm(tmp_path / "scene" / "disp0.pfm", disparity[:-1])
    with pytest.raises(ValueError, match=r"disparity shape \(23, 40\)"):
        MiddleburyScenes(tmp_path / "scene")[0]


def test_kitti_raw_drive_with_and_without_timestamps(tmp_path, motorcycle):
    for index in range(3):
        left, right, _ = crop(motorcycle, index)
        write_rgb(tmp_path / "image_02" / "data" / f"{index:010d}.png", left)
        write_rgb(tmp_path / "image_03" / "data" / f"{index:010d}.png", right)
    dataset = KittiRawDrive(tmp_path)
    assert len(dataset) == 3 and dataset[0].stamp is None
    assert_sample(dataset[2], *crop(motorcycle, 2)[:2], None, "0000000002")

    (tmp_path / "image_02" / "timestamps.txt").write_text(
        "2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.068074820\n"
        "2011-09-26 13:02:26.171655422\n"
    )
    stamps = [sample.stamp for sample in KittiRawDrive(tmp_path)]
    assert np.diff(stamps) == pytest.approx([0.103685375, 0.103580602], abs=1e-6)


def test_middlebury_single_scene_and_folder_of_scenes(tmp_path, motorcycle):
    for index, name in enumerate(["Motorcycle", "Adirondack", "Piano"]):
        left, right, disparity = crop(motorcycle, index)
        write_rgb(tmp_path / name / "im0.png", left)
        write_rgb(tmp_path / name / "im1.png", right)
        stored = np.where(np.isnan(disparity), np.inf, disparity).astype(np.float32)
        if name == "Motorcycle":
            write_pfm(tmp_path / name / "disp0.pfm", stored)
        elif name == "Adirondack":
            write_pfm(tmp_path / name / "disp0GT.pfm", stored)
    assert np.isinf(read_pfm(tmp_path / "Motorcycle" / "disp0.pfm")).any()

    single = MiddleburyScenes(tmp_path / "Motorcycle")
    assert len(single) == 1
    assert_sample(single[0], *crop(motorcycle, 0), "Motorcycle")

    scenes = MiddleburyScenes(tmp_path)
    assert [sample.name for sample in scenes] == ["Adirondack", "Motorcycle", "Piano"]
    assert_sample(scenes[0], *crop(motorcycle, 1), "Adirondack")
    assert scenes[2].disparity is None


def test_csv_pairs_relative_absolute_comments_and_ground_truth(tmp_path, motorcycle):
    left0, right0, disparity0 = crop(motorcycle, 0)
    left1, right1, _ = crop(motorcycle, 1)
    write_rgb(tmp_path / "a" / "left0.png", left0)
    write_rgb(tmp_path / "a" / "right0.png", right0)
    np.save(tmp_path / "a" / "disp0.npy", disparity0)
    write_rgb(tmp_path / "b" / "left1.png", left1)
    absolute_right = write_rgb(tmp_path / "b" / "right1.png", right1)
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "# left,right,disparity\n"
        "a/left0.png, a/right0.png, a/disp0.npy\n"
        "\n"
        f"b/left1.png,{absolute_right}\n"
    )
    dataset = CsvPairs(csv)
    assert len(dataset) == 2
    assert_sample(dataset[0], left0, right0, disparity0, "left0")
    assert_sample(dataset[1], left1, right1, None, "left1")


def test_csv_malformed_line_names_its_number(tmp_path, motorcycle):
    left, right, _ = crop(motorcycle, 0)
    write_rgb(tmp_path / "l.png", left)
    write_rgb(tmp_path / "r.png", right)
    csv = tmp_path / "pairs.csv"
    csv.write_text("l.png,r.png\n# comment\nl.png\n")
    with pytest.raises(ValueError, match="line 3: expected 'left,right"):
        CsvPairs(csv)
    csv.write_text("l.png,r.png\nl.png,missing.png\n")
    with pytest.raises(ValueError, match="line 2: no file .*missing.png"):
        CsvPairs(csv)


def test_motorcycle_pan_crops_and_scales(motorcycle):
    left, right, disparity = motorcycle
    frames = motorcycle_pan(num_frames=4, crop_width=200, crop_height=100)
    assert [frame.name for frame in frames] == [f"motorcycle_pan_00{i}" for i in range(4)]
    assert [frame.stamp for frame in frames] == [0.0, 0.1, 0.2, 0.3]
    top = (500 - 100) // 2
    # Frame 0 is at the left edge, frame 2 (half way) at the right edge; disparity unchanged.
    assert_sample(
        frames[0], left[top : top + 100, :200], right[top : top + 100, :200],
        disparity[top : top + 100, :200], "motorcycle_pan_000",
    )
    np.testing.assert_array_equal(frames[2].left, left[top : top + 100, -200:])
    np.testing.assert_array_equal(frames[2].disparity, disparity[top : top + 100, -200:])

    half = motorcycle_pan(num_frames=2, crop_width=200, scale=0.5)
    assert half[0].left.shape == (250, 100, 3) and half[0].disparity.shape == (250, 100)
    assert np.nanmax(half[0].disparity) <= 0.5 * np.nanmax(disparity) + 1e-4
    assert np.isnan(half[0].disparity).any()
    with pytest.raises(ValueError, match="does not fit"):
        motorcycle_pan(crop_width=800)


def write_bag(path, storage_plugin, motorcycle):
    """A stereo bag: three left frames, four right frames (one 2 ms late, one unpaired), a
    compressed copy of the left stream and DisparityImage ground truth for the first frame."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    Image = types["sensor_msgs/msg/Image"]
    CompressedImage = types["sensor_msgs/msg/CompressedImage"]
    Header, Time = types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"]
    Disparity = types["stereo_msgs/msg/DisparityImage"]
    Roi = types["sensor_msgs/msg/RegionOfInterest"]

    def header(stamp_ns, frame_id="cam"):
        return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                      frame_id=frame_id)

    def image(stamp_ns, array, encoding, frame_id="cam"):
        data, step = encode_image(array, encoding)
        return Image(
            header=header(stamp_ns, frame_id), height=array.shape[0], width=array.shape[1],
            encoding=encoding, is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8),
        )

    start = 1_700_000_000 * 10**9
    stamps = [start + k * 100_000_000 for k in range(4)]
    with Writer(path, version=9, storage_plugin=storage_plugin) as writer:
        def add(topic, msgtype):
            return writer.add_connection(topic, msgtype, typestore=typestore)

        left_topic = add("/stereo/left/image_rect", "sensor_msgs/msg/Image")
        compressed_topic = add(
            "/stereo/left/image_rect/compressed", "sensor_msgs/msg/CompressedImage"
        )
        right_topic = add("/stereo/right/image_rect", "sensor_msgs/msg/Image")
        disparity_topic = add("/stereo/disparity", "stereo_msgs/msg/DisparityImage")

        def write(connection, stamp_ns, message):
            raw = typestore.serialize_cdr(message, connection.msgtype)
            writer.write(connection, stamp_ns + 1_000_000, raw)  # recorded 1 ms after capture

        for k in range(3):
            left, right, truth = crop(motorcycle, k)
            write(left_topic, stamps[k], image(stamps[k], left, "rgb8"))
            png = cv2.imencode(".png", cv2.cvtColor(left, cv2.COLOR_RGB2BGR))[1]
            write(compressed_topic, stamps[k], CompressedImage(header(stamps[k]), "png", png))
            right_stamp = stamps[k] + (2_000_000 if k == 1 else 0)
            write(right_topic, right_stamp,
                  image(right_stamp, right[..., ::-1].copy(), "bgr8", "cam_right"))
        _, extra_right, _ = crop(motorcycle, 3)
        write(right_topic, stamps[3], image(stamps[3], extra_right, "rgb8"))

        truth = crop(motorcycle, 0)[2]
        stored = np.where(np.isnan(truth), -1.0, truth).astype(np.float32)
        write(
            disparity_topic, stamps[0],
            Disparity(
                header=header(stamps[0]), image=image(stamps[0], stored, "32FC1"), f=500.0,
                t=0.1, valid_window=Roi(0, 0, HEIGHT, WIDTH, False), min_disparity=0.0,
                max_disparity=64.0, delta_d=1 / 16,
            ),
        )
    return path


@pytest.fixture(
    scope="module", params=[StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["db3", "mcap"]
)
def bag(request, tmp_path_factory, motorcycle):
    return write_bag(tmp_path_factory.mktemp("bags") / "stereo", request.param, motorcycle)


def storage_file(bag_directory):
    (file,) = [p for p in bag_directory.iterdir() if p.suffix in (".db3", ".mcap")]
    return file


def test_rosbag_pairs_exact_stamps_and_counts_unpaired(bag, motorcycle):
    topics = {"left_topic": "/stereo/left/image_rect", "disparity_topic": "/stereo/disparity",
              "tolerance": 0.0}
    for path in (bag, storage_file(bag)):
        dataset = RosbagStereo(path, **topics)
        assert dataset.right_topic == "/stereo/right/image_rect"
        # Exact pairing: frames 0 and 2; left 1, late right 1 and extra right 3 are unpaired.
        assert len(dataset) == 2 and dataset.dropped == 3
        assert dataset.unpaired == {"/stereo/left/image_rect": 1,
                                    "/stereo/right/image_rect": 2}
        first, second = list(dataset)
        left, right, truth = crop(motorcycle, 0)
        np.testing.assert_array_equal(first.left, left)
        np.testing.assert_array_equal(first.right, right)
        np.testing.assert_array_equal(first.disparity, truth)  # -1 (no match) read as NaN
        assert first.stamp == pytest.approx(1_700_000_000.0)
        assert second.disparity is None
        np.testing.assert_array_equal(dataset[1].left, crop(motorcycle, 2)[0])


def test_rosbag_tolerance_pairs_nearest_stamp(bag, motorcycle):
    dataset = RosbagStereo(bag, left_topic="/stereo/left/image_rect", tolerance=0.005)
    assert len(dataset) == 3 and dataset.dropped == 1
    np.testing.assert_array_equal(dataset[1].right, crop(motorcycle, 1)[1])
    assert dataset[1].stamp == pytest.approx(1_700_000_000.1)
    # By default too: the right view 2 ms late is the left one's partner.
    default = RosbagStereo(bag, left_topic="/stereo/left/image_rect")
    assert default.tolerance == BAG_PAIR_TOLERANCE_S and len(default) == 3
    # The recorded header: the exact left stamp in ns and each view's frame_id.
    assert default.recorded_header(1) == (1_700_000_000_100_000_000, "cam", "cam_right")


def write_offset_bag(path, motorcycle, offset_ns):
    """Three frames whose right views are stamped ``offset_ns`` after the left ones (cameras
    synchronised in software)."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    types = typestore.types
    Image, Header = types["sensor_msgs/msg/Image"], types["std_msgs/msg/Header"]
    Time = types["builtin_interfaces/msg/Time"]
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = [writer.add_connection(f"/cam/{side}/image_rect", "sensor_msgs/msg/Image",
                                        typestore=typestore) for side in ("left", "right")]
        for k in range(3):
            for connection, array, stamp in zip(topics, crop(motorcycle, k)[:2],
                                                (k * 10**8, k * 10**8 + offset_ns)):
                data, step = encode_image(array, "rgb8")
                message = Image(header=Header(stamp=Time(sec=stamp // 10**9,
                                                         nanosec=stamp % 10**9),
                                              frame_id="cam"),
                                height=array.shape[0], width=array.shape[1], encoding="rgb8",
                                is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
                writer.write(connection, stamp, typestore.serialize_cdr(message, Image.__msgtype__))
    return path


def test_rosbag_where_nothing_pairs_says_why(tmp_path, motorcycle):
    bag = write_offset_bag(tmp_path / "offset", motorcycle, 3_000_000)
    with pytest.raises(ValueError, match=r"no stereo pair.*3 messages on /cam/left/image_rect "
                                         r"and 3 on /cam/right/image_rect.*0\.003000 s apart"
                                         r".*tolerance of 0 s"):
        RosbagStereo(bag, tolerance=0.0)
    paired = RosbagStereo(bag)  # the default tolerance pairs them
    assert len(paired) == 3 and paired.dropped == 0
    np.testing.assert_array_equal(paired[2].right, crop(motorcycle, 2)[1])
    with pytest.raises(ValueError, match="0.003000 s apart"):
        open_dataset(bag, tolerance=0.001)


def test_rosbag_reads_compressed_images(bag, motorcycle):
    dataset = RosbagStereo(bag, left_topic="/stereo/left/image_rect/compressed")
    np.testing.assert_array_equal(dataset[0].left, crop(motorcycle, 0)[0])


def test_rosbag_ambiguous_topics_are_listed(bag):
    with pytest.raises(ValueError, match="2 image topics contain 'left'.*/stereo/right/image_rect"):
        RosbagStereo(bag)
    with pytest.raises(ValueError, match="not an image topic"):
        RosbagStereo(bag, left_topic="/stereo/disparity")


def test_open_dataset_recognises_every_layout(tmp_path, motorcycle, bag):
    kitti = make_kitti_2015(tmp_path / "kitti", motorcycle)
    left, right, disparity = crop(motorcycle, 0)
    write_rgb(tmp_path / "raw" / "image_02" / "data" / "0.png", left)
    write_rgb(tmp_path / "raw" / "image_03" / "data" / "0.png", right)
    write_rgb(tmp_path / "mb" / "Scene" / "im0.png", left)
    write_rgb(tmp_path / "mb" / "Scene" / "im1.png", right)
    (tmp_path / "pairs.csv").write_text("raw/image_02/data/0.png,raw/image_03/data/0.png\n")
    (tmp_path / "empty").mkdir()

    assert isinstance(open_dataset(kitti), KittiStereo)
    assert isinstance(open_dataset(tmp_path / "raw"), KittiRawDrive)
    assert isinstance(open_dataset(tmp_path / "mb"), MiddleburyScenes)
    assert isinstance(open_dataset(tmp_path / "mb" / "Scene"), MiddleburyScenes)
    assert isinstance(open_dataset(str(tmp_path / "pairs.csv")), CsvPairs)
    topic = {"left_topic": "/stereo/left/image_rect"}
    assert isinstance(open_dataset(bag, **topic), RosbagStereo)
    assert isinstance(open_dataset(storage_file(bag), **topic), RosbagStereo)
    frames = open_dataset(None, num_frames=2, crop_width=100, crop_height=50)
    assert len(frames) == 2 and frames[0].left.shape == (50, 100, 3)
    assert open_dataset("motorcycle", num_frames=3, crop_width=100)[2].name == "motorcycle_pan_002"
    with pytest.raises(ValueError, match="recognised: .*KITTI"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")


def test_written_stereo_bag_reads_back_with_its_ground_truth(tmp_path, motorcycle):
    from stereo_adapt_ros.data.bag import write_stereo_bag
    from stereo_adapt_ros.data.stereo_camera import StereoCamera

    samples = motorcycle_pan(3, crop_width=256, crop_height=128)
    for storage in ("mcap", "sqlite3"):
        path = write_stereo_bag(tmp_path / storage, samples, StereoCamera(500, 500, 128, 64, 0.1),
                                storage=storage)
        bag = open_dataset(str(path))
        assert len(bag) == 3 and bag.disparity_topic == "/stereo/ground_truth/disparity"
        for written, read in zip(samples, bag):
            assert np.array_equal(written.left, read.left)
            assert np.array_equal(written.right, read.right)
            assert np.array_equal(np.isnan(written.disparity), np.isnan(read.disparity))
            assert np.nanmax(np.abs(written.disparity - read.disparity)) == 0
    with pytest.raises(ValueError, match="exists"):
        write_stereo_bag(tmp_path / "mcap", samples, StereoCamera(500, 500, 128, 64, 0.1))


def test_disparity_image_ground_truth_is_decoded_with_the_bags_principal_points(tmp_path):
    """A DisparityImage holds ``x_l - x_r + doffs`` (stereo_image_proc's convention, the
    node's): with the right principal point 6.5 px right of the left one, the written bag stores
    the ground truth 6.5 px higher, and reading it, and scoring against it, gives the plain
    ``x_l - x_r`` back."""
    from stereo_adapt_ros.data.bag import decode_disparity_image, open_bag, write_stereo_bag
    from stereo_adapt_ros.data.stereo_camera import StereoCamera
    from stereo_adapt_ros.evaluation.metrics import MetricAccumulator

    camera = StereoCamera(500, 500, 128, 64, 0.1, doffs=6.5)
    samples = motorcycle_pan(2, crop_width=256, crop_height=128)
    path = write_stereo_bag(tmp_path / "offset", samples, camera)
    with open_bag(path) as reader:
        (connection,) = [c for c in reader.connections
                         if c.topic == "/stereo/ground_truth/disparity"]
        _, _, raw = next(iter(reader.messages(connections=[connection])))
        message = reader.deserialize(raw, connection.msgtype)
    assert message.min_disparity == 6.5
    np.testing.assert_allclose(decode_disparity_image(message), samples[0].disparity + 6.5)
    bag = open_dataset(str(path))
    assert bag.doffs == 6.5
    for written, read in zip(samples, bag):
        assert np.array_equal(np.isnan(written.disparity), np.isnan(read.disparity))
        np.testing.assert_allclose(read.disparity, written.disparity, atol=1e-5)
        scores = MetricAccumulator().add(written.disparity, read.disparity)
        assert scores["EPE"] < 1e-5 and scores["D1_all"] == 0
